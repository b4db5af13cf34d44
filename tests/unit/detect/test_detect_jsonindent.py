"""The report's JSON writer is `json.dumps(value, indent=2)` byte for byte."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.detect.jsonindent import dumps

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
)  # NaN and ±Infinity too, as json.dumps writes them
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(documents)
def test_same_text_as_json_dumps_indent_2(document: object) -> None:
    assert dumps(document) == json.dumps(document, indent=2)


def test_values_a_report_never_holds_are_refused() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        dumps({"a": {1, 2}})
    with pytest.raises(TypeError, match="keys must be str"):  # json.dumps would write "1"
        dumps({1: "key not a string"})
