"""Shared set-up for the call engine tests: a manual clock, predictable call ids, four devices."""

from __future__ import annotations

import itertools
from typing import Any

from callgate.clock import ManualClock
from callgate.signaling import CallEngine, CdrFinal, Effect, Send

OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
ANSWER = OFFER.replace("o=- 1 1", "o=- 2 2")


class Rig:
    """alice (a1) calls bob, who has two devices (b1, b2); carol (c1) is a third party."""

    def __init__(self, **engine_options: Any) -> None:
        self.clock = ManualClock()
        counter = itertools.count(1)
        self.engine = CallEngine(
            self.clock, new_call_id=lambda: f"call{next(counter)}", **engine_options
        )
        self.ids = itertools.count(1)
        for device, handle, name in [
            ("a1", "alice", "Alice"),
            ("b1", "bob", "Bob"),
            ("b2", "bob", "Bob"),
            ("c1", "carol", "Carol"),
        ]:
            assert self.engine.device_connected(device, handle, name) == []

    def rid(self) -> str:
        return f"r{next(self.ids)}"

    def invite(self, device: str = "a1", to: str = "bob", exists: bool = True) -> list[Effect]:
        return self.engine.invite(device, self.rid(), to, OFFER, callee_exists=exists)

    def ringing_call(self) -> str:
        effects = self.invite()
        return str(reply(effects, "a1")["call_id"])

    def answered_call(self, device: str = "b1") -> str:
        call_id = self.ringing_call()
        effects = self.engine.answer(device, self.rid(), call_id, ANSWER)
        assert reply(effects, device)["type"] == "ack"
        return call_id

    def media_call(self, device: str = "b1") -> str:
        call_id = self.answered_call(device)
        for who in ("a1", device):
            effects = self.engine.media(
                who, self.rid(), call_id, "connected", "relay", "relay", "opus"
            )
            assert reply(effects, who)["type"] == "ack"
        return call_id

    def stats(self, device: str, call_id: str, inbound: int, final: bool = False) -> list[Effect]:
        from callgate.signaling.messages import StreamStats

        streams = [
            StreamStats(kind="audio", direction="inbound", packets=inbound, packets_lost=0),
            StreamStats(kind="audio", direction="outbound", packets=10_000, packets_lost=0),
        ]
        return self.engine.stats(device, self.rid(), call_id, streams, final)


def sends(effects: list[Effect], device: str | None = None) -> list[dict[str, Any]]:
    return [e.message for e in effects if isinstance(e, Send) and device in (None, e.device_id)]


def sent_types(effects: list[Effect]) -> list[tuple[str, str]]:
    return [(e.device_id, e.message["type"]) for e in effects if isinstance(e, Send)]


def reply(effects: list[Effect], device: str) -> dict[str, Any]:
    """The one ack/error sent to `device` among `effects`."""
    replies = [m for m in sends(effects, device) if m["type"] in ("ack", "error")]
    assert len(replies) == 1, replies
    return replies[0]


def final(effects: list[Effect]) -> CdrFinal:
    finals = [e for e in effects if isinstance(e, CdrFinal)]
    assert len(finals) == 1, effects
    return finals[0]


def ended(effects: list[Effect]) -> dict[str, tuple[str, str]]:
    """device → (reason, ended_by) of every `call.ended` sent."""
    return {
        e.device_id: (e.message["reason"], e.message["ended_by"])
        for e in effects
        if isinstance(e, Send) and e.message["type"] == "call.ended"
    }
