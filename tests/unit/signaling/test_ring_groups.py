"""Ring groups without sockets: a call to a group rings every member's devices at once, the
first answer wins and the others hear `answered-elsewhere`, the record's callee becomes the
member who answered; members in a call are skipped, a member's decline leaves the others
ringing, a call that must be recorded rings only once anchored, and the policy's verdicts on
each member combine into the strictest."""

from __future__ import annotations

from callgate.signaling import CdrOpen, CdrUpdate, Denial, Effect, Reason
from callgate.signaling.ring_groups import group_verdict
from callgate.types.decisions import Grant
from tests.unit.signaling.signaling_helpers import (
    ANSWER,
    OFFER,
    Rig,
    final,
    reply,
    sends,
    sent_types,
)


def group_rig() -> Rig:
    rig = Rig()  # alice a1, bob b1 b2, carol c1
    rig.engine.device_connected("t1", "+442071234567", "+442071234567 (carrier)")
    return rig


def ring(
    rig: Rig, members: tuple[str, ...] = ("bob", "carol"), grant: Grant | None = None
) -> list[Effect]:
    rules = dict.fromkeys(members, grant.rule if grant is not None else None)
    return rig.engine.invite_group("t1", rig.rid(), "group:desk", OFFER, rules, None, grant)


def test_every_members_devices_ring_and_the_first_answer_wins() -> None:
    rig = group_rig()
    effects = ring(rig)
    opened = effects[0]
    assert isinstance(opened, CdrOpen)
    assert (opened.call.callee_handle, opened.call.ringing_devices) == ("group:desk", 3)
    assert sorted(d for d, t in sent_types(effects) if t == "call.incoming") == ["b1", "b2", "c1"]
    call_id = str(reply(effects, "t1")["call_id"])
    # carol may see and answer it; alice, in no such group, may not
    refused = rig.engine.answer("a1", rig.rid(), call_id, ANSWER)
    assert reply(refused, "a1")["code"] == "not-found"
    answered = rig.engine.answer("c1", rig.rid(), call_id, ANSWER)
    update = next(e for e in answered if isinstance(e, CdrUpdate))
    assert (update.callee_user, update.callee_device) == ("carol", "c1")
    elsewhere = [d for d, t in sent_types(answered) if t == "call.ended"]
    assert sorted(elsewhere) == ["b1", "b2"]
    assert {sends(answered, d)[0]["reason"] for d in elsewhere} == {"answered-elsewhere"}
    # bob is no party to the call any more; carol hangs up like any callee
    assert reply(rig.engine.hangup("b1", rig.rid(), call_id), "b1")["code"] == "not-found"
    assert [c.callee_handle for c in rig.engine.live_calls()] == ["carol"]
    assert rig.engine.together("+442071234567", "carol")
    assert not rig.engine.together("+442071234567", "bob")
    ended = final(rig.engine.hangup("c1", rig.rid(), call_id))
    assert ended.reason is Reason.HANGUP


def test_while_ringing_every_member_is_together_with_the_caller() -> None:
    rig = group_rig()
    ring(rig)
    assert rig.engine.together("+442071234567", "bob")
    assert rig.engine.together("carol", "+442071234567")
    assert not rig.engine.together("bob", "carol")
    assert not rig.engine.together("+442071234567", "alice")


def test_a_member_in_a_call_is_skipped_and_all_busy_is_busy() -> None:
    rig = group_rig()
    rig.answered_call("b1")  # alice calls bob, he answers on b1
    effects = ring(rig)
    assert [d for d, t in sent_types(effects) if t == "call.incoming"] == ["c1"]
    rig.engine.device_connected("t2", "+15550001111", "x")
    only_bob = rig.engine.invite_group("t2", rig.rid(), "group:desk", OFFER, {"bob": None})
    assert final(only_bob).reason is Reason.BUSY
    nobody = rig.engine.invite_group("t2", rig.rid(), "group:empty", OFFER, {})
    assert final(nobody).reason is Reason.OFFLINE


def test_a_decline_stops_that_members_devices_and_the_last_ends_the_call() -> None:
    rig = group_rig()
    call_id = str(reply(ring(rig), "t1")["call_id"])
    declined = rig.engine.reject("b1", rig.rid(), call_id)
    assert sent_types(declined) == [  # bob's devices stop ringing, carol's ring on
        ("b1", "ack"),
        ("b1", "call.ended"),
        ("b2", "call.ended"),
        ("t1", "call.ringing"),
    ]
    assert sends(declined, "t1")[0]["devices"] == 1
    assert rig.engine.call_of("b2") is None and rig.engine.call_of("c1") == call_id
    assert rig.engine.is_live(call_id)
    last = rig.engine.hangup("c1", rig.rid(), call_id)  # a ringing device's hang-up declines
    assert final(last).reason is Reason.REJECTED
    assert ("c1", "call.ended") in sent_types(last) and ("t1", "call.ended") in sent_types(last)
    assert not rig.engine.is_live(call_id)


def test_a_group_call_that_must_be_recorded_rings_once_anchored_and_the_anchor_answers() -> None:
    """Nobody rings until the anchor has the caller (fail closed); then every member's devices
    ring with the anchor's offer and the notice, but a member who got busy meanwhile; the
    first answer wins, the caller gets the anchor's answer, the record names the member."""
    rig = group_rig()
    members = {"bob": "allow-bob", "carol": "record-carol"}
    grant = Grant("record-carol", recording_required=True)
    effects = rig.engine.invite_group("t1", rig.rid(), "group:desk", OFFER, members, None, grant)
    opened = effects[0]
    assert isinstance(opened, CdrOpen) and opened.call.recording_required
    assert not any(t == "call.incoming" for _, t in sent_types(effects))
    assert opened.call.ring_at is None and opened.call.ringing_devices == 0
    call_id = str(reply(effects, "t1")["call_id"])
    assert rig.engine.anchoring_call(call_id) is not None
    assert rig.engine.together("+442071234567", "carol")
    rig.engine.invite("c1", rig.rid(), "alice", OFFER, callee_exists=True)  # carol gets busy
    notice = {"type": "call.recording", "call_id": call_id}
    callee_offer = OFFER.replace("o=- 1 1", "o=- 7 7")
    rung = rig.engine.ring_anchored(call_id, ANSWER, callee_offer, notice)
    assert isinstance(rung[0], CdrUpdate) and rung[0].anchored and rung[0].ring_at is not None
    incoming = [(d, t) for d, t in sent_types(rung) if t in ("call.incoming", "call.recording")]
    assert incoming == [("b1", "call.incoming"), ("b2", "call.incoming"),
                        ("b1", "call.recording"), ("b2", "call.recording")]  # fmt: skip
    assert {m["sdp"] for m in sends(rung) if m["type"] == "call.incoming"} == {callee_offer}
    assert not rig.engine.together("+442071234567", "carol")  # not rung: no party
    answered = rig.engine.answer("b2", rig.rid(), call_id, ANSWER.replace("2 2", "9 9"))
    (to_caller,) = [m for m in sends(answered, "t1") if m["type"] == "call.answered"]
    assert to_caller["sdp"] == ANSWER  # the anchor's answer, not bob's
    assert [m["reason"] for m in sends(answered, "b1")] == ["answered-elsewhere"]
    update = answered[0]
    assert isinstance(update, CdrUpdate) and update.callee_user == "bob"
    assert update.policy_rule is None  # the record keeps "record-carol": why it is recorded
    # nobody left to ring once anchored (bob's devices went away): it ends, as one user's does
    rig = group_rig()
    effects = rig.engine.invite_group("t1", rig.rid(), "group:desk", OFFER, {"bob": None}, None,
                                      grant)  # fmt: skip
    call_id = str(reply(effects, "t1")["call_id"])
    for device in ("b1", "b2"):
        rig.engine.device_disconnected(device)
    assert final(rig.engine.ring_anchored(call_id, ANSWER, OFFER, notice)).reason is (
        Reason.OFFLINE
    )


def test_the_policy_is_asked_per_member_and_the_strictest_grant_wins() -> None:
    deny = Denial("screen", "no")
    members = ("carol", "bob", "dave")
    verdicts = {
        "bob": (None, Grant("desk", max_duration_s=600)),
        "carol": (deny, None),
        "dave": (None, Grant("rec", relay_only=True, max_duration_s=300, recording_required=True)),
    }
    allowed, denial, grant = group_verdict(members, verdicts)
    assert allowed == ("bob", "dave") and denial is None
    assert grant == Grant("rec", relay_only=True, max_duration_s=300, recording_required=True)
    everyone = {h: (deny, None) for h in members}
    assert group_verdict(members, everyone) == ((), deny, None)
    plain = {"bob": (None, Grant("a")), "carol": (None, Grant("b", max_duration_s=60))}
    assert group_verdict(("carol", "bob"), plain) == (
        ("bob", "carol"),
        None,
        Grant("a", max_duration_s=60),
    )
    assert group_verdict((), {}) == ((), None, None)


def test_only_the_members_rung_and_not_declined_are_together_with_the_caller() -> None:
    """Call-bound relaying admits the caller with the members actually ringing: not one in a
    call (skipped as busy), not one offline, not one who declined or whose last device left."""
    rig = group_rig()
    rig.answered_call("b1")  # bob is busy
    rig.engine.device_connected("d1", "dave", "Dave")
    rig.engine.device_connected("e1", "erin", "Erin")
    members = {"bob": None, "carol": None, "dave": None, "erin": None, "frank": None}
    effects = rig.engine.invite_group("t1", rig.rid(), "group:desk", OFFER, members)
    call_id = str(reply(effects, "t1")["call_id"])
    caller = "+442071234567"
    together = [h for h in members if rig.engine.together(caller, h)]
    assert together == ["carol", "dave", "erin"]
    rig.engine.reject("c1", rig.rid(), call_id)  # carol declines
    assert not rig.engine.together(caller, "carol")
    rig.engine.device_disconnected("d1")  # dave's only ringing device goes
    assert not rig.engine.together(caller, "dave")
    assert rig.engine.together(caller, "erin") and rig.engine.is_live(call_id)
    again = rig.engine.answer("b2", rig.rid(), call_id, ANSWER)
    assert reply(again, "b2")["code"] == "not-found"  # bob was never rung: no party


def test_the_record_names_the_rule_of_the_member_who_answered() -> None:
    rig = group_rig()
    rules = {"bob": "1:desk-hours", "carol": "2:carol-direct"}
    grant = Grant("1:desk-hours")  # the attempt's record names the first member's rule
    effects = rig.engine.invite_group("t1", rig.rid(), "group:desk", OFFER, rules, None, grant)
    opened = effects[0]
    assert isinstance(opened, CdrOpen) and opened.call.policy_rule == "1:desk-hours"
    call_id = str(reply(effects, "t1")["call_id"])
    answered = rig.engine.answer("c1", rig.rid(), call_id, ANSWER)
    update = next(e for e in answered if isinstance(e, CdrUpdate))
    assert (update.callee_user, update.policy_rule) == ("carol", "2:carol-direct")


def test_when_the_last_member_left_ringing_drops_the_call_ends_callee_disconnected() -> None:
    """Bob declines on b1; carol, the one member still ringing, loses her device: nobody was
    left to answer because the callee side went away, as in a call to one user."""
    rig = group_rig()
    call_id = str(reply(ring(rig), "t1")["call_id"])
    rig.engine.reject("b1", rig.rid(), call_id)
    ended = final(rig.engine.device_disconnected("c1"))
    assert (ended.reason, ended.ended_by.value) == (Reason.CALLEE_DISCONNECTED, "callee")
    assert not rig.engine.is_live(call_id)
