"""The report's JSON encoder writes exactly what `json.dumps(indent=2)` writes."""

from __future__ import annotations

import json

import pytest

from callgate.detect.jsontext import dumps

CASES: list[object] = [
    {"summary": {"files": ["/a b/ü.pcap"], "packets": 10, "ratio": 0.1, "none": None}},
    {"flows": [{"ok": True, "no": False, "media": [], "m": {}, "t": (1, 2.5e-07)}], "e": []},
    [1, -2, 3.0, 1e300, 'tab\t"quote" \\ \u2028 \x00 😀', [[]], [{}]],
    {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")},
    {1: "int key", None: "none key", 2.5: "float key"},  # not handled here: same text via json
    "plain",
    7,
    None,
    {},
    [],
]


@pytest.mark.parametrize("value", CASES)
def test_same_text_as_json_dumps_indent_2(value: object) -> None:
    assert dumps(value) == json.dumps(value, indent=2)


def test_unknown_type_raises_like_json() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})
