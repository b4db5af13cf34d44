"""`json.dumps(value, indent=2)`, byte for byte, at a fraction of its cost.

On Python < 3.13 the standard library falls back to its pure-Python encoder whenever `indent` is
set; a detection report holds ~10⁵ values, which made that encoder the largest single cost of
`callgate detect --format json`. This one handles the types a report holds (dict with str keys,
list, tuple, str, int, float, bool, None) and hands anything else to `json.dumps`.
"""

from __future__ import annotations

from _json import encode_basestring_ascii as _string  # json.encoder's, without the json package

_INDENT = "  "


class _Unhandled(Exception):
    pass


def dumps(value: object) -> str:
    """The same text as `json.dumps(value, indent=2)`."""
    try:
        return _encode(value, "\n")
    except _Unhandled:
        import json

        return json.dumps(value, indent=2)


def _encode(value: object, newline: str) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)  # type: ignore[arg-type]
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is float:
        return _float(value)  # type: ignore[arg-type]
    inner = newline + _INDENT
    if kind is dict:
        if not value:
            return "{}"
        parts = []
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise _Unhandled
            kind = type(item)  # the common scalars inline: a call less per value
            if kind is str:
                text = _string(item)
            elif kind is int:
                text = int.__repr__(item)
            else:
                text = _encode(item, inner)
            parts.append(_string(key) + ": " + text)
        return "{" + inner + ("," + inner).join(parts) + newline + "}"
    if kind is list or kind is tuple:
        if not value:
            return "[]"
        items = [_encode(item, inner) for item in value]  # type: ignore[attr-defined]
        return "[" + inner + ("," + inner).join(items) + newline + "]"
    raise _Unhandled


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == -float("inf"):
        return "-Infinity"
    return float.__repr__(value)
