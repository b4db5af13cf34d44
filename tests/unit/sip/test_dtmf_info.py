"""DTMF in SIP INFO bodies (sip/dtmf_info.py): what is read, what gets 415 or 400."""

from __future__ import annotations

import pytest

from callgate.sip.dtmf_info import InfoError, parse_info


@pytest.mark.parametrize(
    ("content_type", "body", "pressed"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
        ("Application/DTMF-Relay; charset=us-ascii", b"Signal= #\nDuration= 100", ("#", 100)),
        ("application/dtmf-relay", b"Signal=10\r\nDuration=250\r\n", ("*", 250)),  # event code
        ("application/dtmf-relay", b"Signal=11\r\n", ("#", 250)),  # no Duration: the default
        ("application/dtmf-relay", b"signal=d\r\nduration=999999\r\n", ("D", 5000)),  # clamped
        ("application/dtmf-relay", b"Signal=1\r\nDuration=0\r\n", ("1", 40)),
        ("application/dtmf", b"7", ("7", 250)),
        ("application/dtmf", b"11\r\n", ("#", 250)),
    ],
)
def test_keys_are_read_from_both_bodies(
    content_type: str, body: bytes, pressed: tuple[str, int]
) -> None:
    assert parse_info(content_type, body) == pressed


@pytest.mark.parametrize(
    ("content_type", "body", "status", "reason"),
    [
        ("text/plain", b"5", 415, "Unsupported Media Type"),
        ("application/sdp", b"v=0", 415, "Unsupported Media Type"),
        ("application/dtmf-relay", b"Duration=160\r\n", 400, "no Signal"),
        ("application/dtmf-relay", b"Signal=E\r\n", 400, "not a DTMF key"),
        ("application/dtmf-relay", b"Signal=16\r\n", 400, "not a DTMF key"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=-1\r\n", 400, "bad Duration"),
        ("application/dtmf-relay", "Signal=\u0665".encode(), 400, "not ASCII"),
        ("application/dtmf-relay", b"Signal=5\r\n" * 40, 400, "too long"),
        ("application/dtmf", b"", 400, "not a DTMF key"),
    ],
)
def test_other_bodies_are_refused_precisely(
    content_type: str, body: bytes, status: int, reason: str
) -> None:
    with pytest.raises(InfoError, match=reason) as refused:
        parse_info(content_type, body)
    assert refused.value.status == status
