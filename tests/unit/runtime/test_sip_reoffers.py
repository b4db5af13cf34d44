"""A phone's re-INVITEs in a call it made (runtime/sip_reoffers.py `Reoffers`), without sockets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from callgate.runtime.sip_reoffers import Reoffers
from callgate.sip.sdp import audio_sdp, parse_audio


class Fill:
    def __init__(self) -> None:
        self.holds = 0

    def hold(self) -> None:
        self.holds += 1


def test_rfc2543_hold_with_sendrecv_fills_silence_for_the_recorder() -> None:
    """`c=0.0.0.0` with a=sendrecv (or sendonly) is hold too (RFC 3264 §8.4): nothing goes to the
    phone, and the quiet phone's leg is filled with silence, so the recorder's silence limit does
    not end the held call `recording-failed`."""
    first = audio_sdp("192.0.2.5", 4000, "pcmu")
    rtp = SimpleNamespace(sending=True, allowed=["192.0.2.5"])
    fill = Fill()
    reoffers = Reoffers(
        parse_audio(first), first, "pcmu", None, ("127.0.0.1", 5000), (1, 1),
        cast(Any, rtp), cast(Any, fill),
    )  # fmt: skip
    for n, direction in enumerate(("sendrecv", "sendonly"), 1):
        held = audio_sdp("0.0.0.0", 4000 + n, "pcmu", direction=direction)
        assert parse_audio(held).held
        reoffers.answer(held)
        assert rtp.sending is False
        assert fill.holds == n
