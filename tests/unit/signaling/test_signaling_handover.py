"""A call outlives its node (signaling/handover.py): re-attaching a party's new device, a call
rebuilt from its record keeps its true duration, and silence excused while the bus is down."""

from __future__ import annotations

from callgate.signaling import CdrFinal
from callgate.signaling.model import HeldCall
from tests.unit.signaling.signaling_helpers import Rig, reply, sends


def test_a_party_reattaches_on_a_new_device_and_hangs_up_there() -> None:
    rig = Rig()
    call_id = rig.media_call("b1")
    rig.engine.device_connected("a2", "alice", "Alice")
    ack = reply(rig.engine.reattach("a2", rig.rid(), call_id), "a2")
    assert ack == {"type": "ack", "id": ack["id"], "call_id": call_id, "role": "caller",
                   "state": "media"}  # fmt: skip
    assert reply(rig.engine.hangup("a1", rig.rid(), call_id), "a1")["code"] == "conflict"
    # carol is no party: the call's existence is not leaked; a ringing call is not re-attached
    assert reply(rig.engine.reattach("c1", rig.rid(), call_id), "c1")["code"] == "not-found"
    effects = rig.engine.hangup("a2", rig.rid(), call_id)
    assert [m["type"] for m in sends(effects, "b1")] == ["call.ended"]
    ringing = rig.ringing_call()
    assert reply(rig.engine.reattach("b2", rig.rid(), ringing), "b2")["code"] == "conflict"


def test_an_adopted_call_keeps_its_true_duration_and_reaches_the_other_party() -> None:
    rig = Rig()
    now = rig.clock.wall()
    held = HeldCall("held1", "alice", "gone1", "bob", "b1", now - 70.0, now - 60.0, media=True)
    rig.engine.device_connected("a2", "alice", "Alice")
    ack = reply(rig.engine.adopt(held, "a2", rig.rid()), "a2")
    assert (ack["role"], ack["state"]) == ("caller", "media")
    assert rig.engine.call_of("b1") == "held1"  # bob's device, connected here, carries it
    rig.clock.advance(5.0)
    rig.stats("b1", "held1", 100)
    rig.stats("a2", "held1", 100)
    effects = rig.engine.hangup("b1", rig.rid(), "held1")
    final = next(e for e in effects if isinstance(e, CdrFinal))
    assert final.duration_s == 65.0
    assert [m["reason"] for m in sends(effects, "a2") if m["type"] == "call.ended"] == ["hangup"]


def test_silence_is_excused_for_devices_whose_reports_cannot_arrive() -> None:
    rig = Rig(silence_timeout=8.0)
    call_id = rig.media_call("b1")
    for n in range(5):  # 15 s: alice keeps reporting; bob's reports are cut off
        rig.clock.advance(3.0)
        rig.stats("a1", call_id, 1000 + n)
        rig.engine.excuse_silence(["b1"])
        assert rig.engine.tick() == []
    rig.clock.advance(9.0)
    ended = [e for e in rig.engine.tick() if isinstance(e, CdrFinal)]
    assert [e.reason for e in ended] == ["media-lost"]
