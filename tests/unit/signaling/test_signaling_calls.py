"""The call state machine without sockets: ringing, answering, ending, and who may do what."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callgate.signaling import (
    CdrFinal,
    CdrOpen,
    CdrUpdate,
    Denial,
    Disposition,
    Reason,
    Send,
    disposition_for,
    handle_message,
    parse_client_message,
)
from callgate.signaling.reasons import EndedBy
from tests.unit.signaling.signaling_helpers import (
    ANSWER,
    OFFER,
    Rig,
    ended,
    final,
    reply,
    sends,
    sent_types,
)


@pytest.fixture
def rig() -> Rig:
    return Rig()


# --- invite ------------------------------------------------------------------------------------


def test_invite_records_then_acks_then_rings_every_device(rig: Rig) -> None:
    effects = rig.engine.invite("a1", "r1", "bob", OFFER, callee_exists=True)
    assert isinstance(effects[0], CdrOpen)
    opened = effects[0].call
    assert (opened.call_id, opened.caller_handle, opened.caller_device) == ("call1", "alice", "a1")
    assert (opened.callee_handle, opened.ringing_devices, opened.relay_only) == ("bob", 2, False)
    assert opened.invite_at == opened.ring_at == rig.clock.wall()
    assert all(isinstance(e, Send) for e in effects[1:])
    assert sent_types(effects) == [
        ("a1", "ack"),
        ("b1", "call.incoming"),
        ("b2", "call.incoming"),
        ("a1", "call.ringing"),
    ]
    assert sends(effects, "a1")[0] == {
        "type": "ack",
        "id": "r1",
        "call_id": "call1",
        "ice_transport_policy": "all",
    }
    assert sends(effects, "b1")[0] == {
        "type": "call.incoming",
        "call_id": "call1",
        "from": {"handle": "alice", "display_name": "Alice"},
        "sdp": OFFER,
        "ice_transport_policy": "all",
    }
    assert sends(effects, "a1")[1] == {"type": "call.ringing", "call_id": "call1", "devices": 2}
    assert rig.engine.call_of("b2") == "call1"
    assert rig.engine.active_calls() == 1


def test_cdr_open_precedes_every_incoming(rig: Rig) -> None:
    effects = rig.invite()
    first_incoming = next(
        i
        for i, e in enumerate(effects)
        if isinstance(e, Send) and e.message["type"] == "call.incoming"
    )
    opens = [i for i, e in enumerate(effects) if isinstance(e, CdrOpen)]
    assert opens == [0] and first_incoming > 0


@pytest.mark.parametrize(
    ("to", "exists", "reason", "disposition"),
    [
        ("nobody", False, "unknown-user", "failed"),
        ("dave", True, "offline", "failed"),
    ],
)
def test_invite_to_unknown_or_offline_user_is_recorded_and_ended(
    rig: Rig, to: str, exists: bool, reason: str, disposition: str
) -> None:
    effects = rig.invite(to=to, exists=exists)
    assert [type(e) for e in effects[:2]] == [CdrOpen, CdrFinal]
    opened = effects[0]
    assert isinstance(opened, CdrOpen) and opened.call.ring_at is None
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (reason, disposition, "server")
    assert record.duration_s == 0.0
    assert sent_types(effects) == [("a1", "ack"), ("a1", "call.ended")]
    assert ended(effects) == {"a1": (reason, "server")}
    assert rig.engine.active_calls() == 0 and rig.engine.call_of("a1") is None


def test_busy_when_any_callee_device_is_in_a_call(rig: Rig) -> None:
    rig.engine.invite("c1", "r0", "bob", OFFER, callee_exists=True)  # carol rings bob
    effects = rig.invite()
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == ("busy", "busy", "server")
    assert ended(effects) == {"a1": ("busy", "server")}
    assert "b1" not in {e.device_id for e in effects if isinstance(e, Send)}
    assert rig.engine.call_of("b1") == "call1"  # carol's call goes on


def test_busy_when_callee_is_itself_calling(rig: Rig) -> None:
    rig.engine.invite("b1", "r0", "carol", OFFER, callee_exists=True)
    assert final(rig.invite()).reason == "busy"


def test_policy_denial_is_recorded_and_told_with_the_rule(rig: Rig) -> None:
    denial = Denial(rule="no-external-after-hours", reason="calls to bob are not allowed")
    effects = rig.engine.invite("a1", "r1", "bob", OFFER, callee_exists=True, denial=denial)
    record = final(effects)
    assert (record.reason, record.disposition, record.detail) == (
        "policy-denied",
        "denied",
        "no-external-after-hours",
    )
    assert sent_types(effects) == [("a1", "ack"), ("a1", "call.denied"), ("a1", "call.ended")]
    assert sends(effects, "a1")[1]["rule"] == "no-external-after-hours"


def test_cannot_call_yourself_or_place_two_calls_from_one_device(rig: Rig) -> None:
    effects = rig.engine.invite("b1", "r1", "bob", OFFER, callee_exists=True)
    assert effects == [Send("b1", {"type": "error", "id": "r1", "code": "bad-request",
                                   "message": "cannot call yourself"})]  # fmt: skip
    rig.ringing_call()
    again = rig.engine.invite("a1", "r2", "carol", OFFER, callee_exists=True)
    assert reply(again, "a1")["code"] == "conflict"
    assert not any(isinstance(e, CdrOpen) for e in again)


# --- answer ------------------------------------------------------------------------------------


def test_first_answer_wins_and_other_devices_hear_answered_elsewhere(rig: Rig) -> None:
    call_id = rig.ringing_call()
    rig.clock.advance(4)
    effects = rig.engine.answer("b2", "r9", call_id, ANSWER)
    update = effects[0]
    assert update == CdrUpdate(call_id, answer_at=rig.clock.wall(), callee_device="b2")
    assert sent_types(effects) == [("b2", "ack"), ("a1", "call.answered"), ("b1", "call.ended")]
    assert sends(effects, "a1") == [{"type": "call.answered", "call_id": call_id, "sdp": ANSWER}]
    assert ended(effects) == {"b1": ("answered-elsewhere", "callee")}
    assert rig.engine.call_of("b1") is None and rig.engine.call_of("b2") == call_id

    second = rig.engine.answer("b1", "r10", call_id, ANSWER)
    assert reply(second, "b1") == {
        "type": "error",
        "id": "r10",
        "code": "conflict",
        "message": "the call was answered by another device",
    }
    assert len(second) == 1


def test_caller_cannot_answer_its_own_call(rig: Rig) -> None:
    call_id = rig.ringing_call()
    assert reply(rig.engine.answer("a1", "r", call_id, ANSWER), "a1")["code"] == "bad-request"


# --- ending ------------------------------------------------------------------------------------


def test_reject_ends_the_call_for_every_device(rig: Rig) -> None:
    call_id = rig.ringing_call()
    effects = rig.engine.reject("b1", "r5", call_id, "in a meeting")
    assert isinstance(effects[0], CdrFinal)
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "rejected",
        "rejected",
        "callee",
    )
    assert record.detail == "in a meeting"
    assert reply(effects, "b1") == {"type": "ack", "id": "r5"}
    assert ended(effects) == {d: ("rejected", "callee") for d in ("a1", "b1", "b2")}
    assert rig.engine.active_calls() == 0


def test_caller_cannot_reject(rig: Rig) -> None:
    call_id = rig.ringing_call()
    assert reply(rig.engine.reject("a1", "r", call_id), "a1")["code"] == "bad-request"


def test_hangup_from_a_ringing_callee_device_is_a_reject(rig: Rig) -> None:
    call_id = rig.ringing_call()
    assert final(rig.engine.hangup("b2", "r", call_id)).reason == "rejected"


def test_caller_hangup_while_ringing_is_a_cancel(rig: Rig) -> None:
    call_id = rig.ringing_call()
    rig.clock.advance(3)
    effects = rig.engine.hangup("a1", "r7", call_id)
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "cancelled",
        "cancelled",
        "caller",
    )
    assert record.end_at == rig.clock.wall()
    assert ended(effects) == {d: ("cancelled", "caller") for d in ("a1", "b1", "b2")}


@pytest.mark.parametrize(("who", "party"), [("a1", "caller"), ("b1", "callee")])
def test_hangup_after_answer_by_either_side(rig: Rig, who: str, party: str) -> None:
    call_id = rig.media_call()
    rig.clock.advance(5)
    effects = rig.engine.hangup(who, "r8", call_id)
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == ("hangup", "answered", party)
    assert record.duration_s == 5.0
    assert ended(effects) == {"a1": ("hangup", party), "b1": ("hangup", party)}
    assert reply(effects, who)["type"] == "ack"
    assert rig.engine.next_deadline() is not None  # the final-stats grace only


def test_ring_timeout_ends_with_no_answer_exactly_at_the_timeout(rig: Rig) -> None:
    rig.ringing_call()
    assert rig.engine.next_deadline() == rig.clock.monotonic() + 30
    rig.clock.advance(29.999)
    assert rig.engine.tick() == []
    rig.clock.advance(0.001)
    effects = rig.engine.tick()
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "no-answer",
        "no-answer",
        "server",
    )
    assert ended(effects) == {d: ("no-answer", "server") for d in ("a1", "b1", "b2")}
    assert rig.engine.next_deadline() is None


# --- disconnects -------------------------------------------------------------------------------


def test_caller_disconnect_while_ringing_cancels(rig: Rig) -> None:
    rig.ringing_call()
    effects = rig.engine.device_disconnected("a1")
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "caller-disconnected",
        "cancelled",
        "caller",
    )
    assert ended(effects) == {d: ("caller-disconnected", "caller") for d in ("b1", "b2")}


def test_callee_device_disconnect_while_ringing_only_ends_when_the_last_one_goes(rig: Rig) -> None:
    call_id = rig.ringing_call()
    effects = rig.engine.device_disconnected("b1")
    assert effects == [Send("a1", {"type": "call.ringing", "call_id": call_id, "devices": 1})]
    effects = rig.engine.device_disconnected("b2")
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "callee-disconnected",
        "failed",
        "callee",
    )
    assert ended(effects) == {"a1": ("callee-disconnected", "callee")}


@pytest.mark.parametrize(
    ("gone", "other", "reason", "party"),
    [("a1", "b1", "caller-disconnected", "caller"), ("b1", "a1", "callee-disconnected", "callee")],
)
def test_disconnect_after_answer(rig: Rig, gone: str, other: str, reason: str, party: str) -> None:
    rig.media_call()
    rig.clock.advance(2)
    effects = rig.engine.device_disconnected(gone)
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (reason, "answered", party)
    assert record.duration_s == 2.0
    assert ended(effects) == {other: (reason, party)}


def test_disconnect_of_an_idle_or_unknown_device_does_nothing(rig: Rig) -> None:
    assert rig.engine.device_disconnected("c1") == []
    assert rig.engine.device_disconnected("c1") == []


def test_answered_elsewhere_device_may_disconnect_without_ending_the_call(rig: Rig) -> None:
    call_id = rig.answered_call("b1")
    assert rig.engine.device_disconnected("b2") == []
    assert rig.engine.call_of("a1") == call_id


# --- authorization -----------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["answer", "reject", "hangup", "candidate", "media", "stats"])
def test_a_stranger_acting_on_a_call_gets_not_found(rig: Rig, action: str) -> None:
    call_id = rig.answered_call()
    engine = rig.engine
    frames: dict[str, dict[str, Any]] = {
        "answer": {"type": "call.answer", "call_id": call_id, "sdp": ANSWER},
        "reject": {"type": "call.reject", "call_id": call_id},
        "hangup": {"type": "call.hangup", "call_id": call_id},
        "candidate": {"type": "call.candidate", "call_id": call_id, "candidate": {"candidate": ""}},
        "media": {"type": "call.media", "call_id": call_id, "state": "failed"},
        "stats": {"type": "call.stats", "call_id": call_id, "streams": []},
    }
    message = parse_client_message(json.dumps({"id": "x1", **frames[action]}))
    effects = handle_message(engine, "c1", message)
    assert effects == [
        Send("c1", {"type": "error", "id": "x1", "code": "not-found", "message": "no such call"})
    ]
    missing = parse_client_message(json.dumps({"id": "x2", **frames[action], "call_id": "nope"}))
    assert reply(handle_message(engine, "c1", missing), "c1")["message"] == "no such call"
    assert engine.call_of("a1") == call_id  # nothing happened to the call


def test_a_party_device_not_carrying_the_call_gets_conflict(rig: Rig) -> None:
    call_id = rig.answered_call("b1")
    assert reply(rig.engine.hangup("b2", "r", call_id), "b2")["code"] == "conflict"
    rig.engine.device_connected("a2", "alice", "Alice")
    assert reply(rig.engine.hangup("a2", "r", call_id), "a2")["code"] == "conflict"
    assert rig.engine.call_of("a1") == call_id


def test_ended_calls_are_not_found(rig: Rig) -> None:
    call_id = rig.ringing_call()
    rig.engine.hangup("a1", "r", call_id)
    assert reply(rig.engine.hangup("a1", "r2", call_id), "a1")["code"] == "not-found"


# --- candidates --------------------------------------------------------------------------------


def test_candidates_go_to_ringing_devices_then_only_to_the_answering_one(rig: Rig) -> None:
    from callgate.signaling.messages import IceCandidate

    call_id = rig.ringing_call()
    cand = IceCandidate(candidate="candidate:1 1 udp 1 192.0.2.1 5000 typ host", sdpMid="0")
    effects = rig.engine.candidate("a1", "r1", call_id, cand)
    assert sent_types(effects) == [
        ("a1", "ack"),
        ("b1", "call.candidate"),
        ("b2", "call.candidate"),
    ]
    assert sends(effects, "b1")[0]["candidate"] == {"candidate": cand.candidate, "sdpMid": "0"}
    assert reply(rig.engine.candidate("b1", "r2", call_id, cand), "b1")["code"] == "conflict"
    rig.engine.answer("b2", "r3", call_id, ANSWER)
    assert sent_types(rig.engine.candidate("a1", "r4", call_id, cand)) == [
        ("a1", "ack"),
        ("b2", "call.candidate"),
    ]
    assert sent_types(rig.engine.candidate("b2", "r5", call_id, cand)) == [
        ("b2", "ack"),
        ("a1", "call.candidate"),
    ]


def test_ping_is_acked(rig: Rig) -> None:
    effects = handle_message(rig.engine, "c1", parse_client_message('{"type":"ping","id":"p"}'))
    assert effects == [Send("c1", {"type": "ack", "id": "p"})]


def test_invite_is_not_dispatched_without_the_directory(rig: Rig) -> None:
    message = parse_client_message('{"type":"call.invite","id":"i","to":"bob","sdp":"v=0"}')
    with pytest.raises(TypeError):
        handle_message(rig.engine, "a1", message)


# --- the reason table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "answered", "disposition"),
    [
        ("unknown-user", False, "failed"),
        ("offline", False, "failed"),
        ("busy", False, "busy"),
        ("rejected", False, "rejected"),
        ("cancelled", False, "cancelled"),
        ("no-answer", False, "no-answer"),
        ("hangup", True, "answered"),
        ("caller-disconnected", True, "answered"),
        ("caller-disconnected", False, "cancelled"),
        ("callee-disconnected", True, "answered"),
        ("callee-disconnected", False, "failed"),
        ("setup-failed", True, "failed"),
        ("media-lost", True, "answered"),
        ("server-restart", True, "answered"),
        ("server-restart", False, "failed"),
        ("policy-denied", False, "denied"),
    ],
)
def test_disposition_table_matches_the_protocol_document(
    reason: str, answered: bool, disposition: str
) -> None:
    assert disposition_for(Reason(reason), answered) == Disposition(disposition)


def test_answered_elsewhere_is_not_an_end_of_the_call() -> None:
    with pytest.raises(ValueError, match="does not end a call"):
        disposition_for(Reason.ANSWERED_ELSEWHERE, False)


def test_every_ended_by_value_is_a_wire_value() -> None:
    assert {str(e) for e in EndedBy} == {"caller", "callee", "server"}
