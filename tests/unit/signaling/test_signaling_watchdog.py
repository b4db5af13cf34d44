"""Media watchdogs on a manual clock: setup timeout, failed reports, silence, final stats."""

from __future__ import annotations

import pytest

from callgate.signaling import CdrUpdate, StatsReport
from callgate.signaling.reasons import Party
from tests.unit.signaling.signaling_helpers import Rig, ended, final, reply


@pytest.fixture
def rig() -> Rig:
    return Rig(ring_timeout=30, setup_timeout=10, silence_timeout=8)


def test_both_media_reports_enter_media_and_record_the_path(rig: Rig) -> None:
    call_id = rig.answered_call()
    rig.clock.advance(0.5)
    first = rig.engine.media("a1", "r1", call_id, "connected", "relay", "host", "opus")
    assert [type(e) for e in first] == [type(first[0])] and reply(first, "a1")["type"] == "ack"
    second = rig.engine.media("b1", "r2", call_id, "connected", "srflx", "relay", None)
    assert second[0] == CdrUpdate(
        call_id, media_at=rig.clock.wall(), media_path="relay/srflx", codec="opus"
    )
    assert reply(second, "b1") == {"type": "ack", "id": "r2"}


def test_media_report_before_answer_is_a_conflict(rig: Rig) -> None:
    call_id = rig.ringing_call()
    effects = rig.engine.media("a1", "r", call_id, "connected", "relay", "relay", "opus")
    assert reply(effects, "a1")["code"] == "conflict"


def test_a_changed_path_after_media_is_recorded(rig: Rig) -> None:
    call_id = rig.media_call()
    effects = rig.engine.media("a1", "r", call_id, "connected", "host", "host", "opus")
    assert effects[0] == CdrUpdate(call_id, media_path="host/relay", codec="opus")
    same = rig.engine.media("a1", "r", call_id, "connected", "host", "host", "opus")
    assert [reply(same, "a1")["type"]] == ["ack"] and len(same) == 1


def test_setup_timeout_ends_with_setup_failed(rig: Rig) -> None:
    call_id = rig.answered_call()
    rig.engine.media("a1", "r", call_id, "connected", "relay", "relay", "opus")  # only one side
    assert rig.engine.next_deadline() == rig.clock.monotonic() + 10
    rig.clock.advance(9.99)
    assert rig.engine.tick() == []
    rig.clock.advance(0.01)
    effects = rig.engine.tick()
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "setup-failed",
        "failed",
        "server",
    )
    assert record.duration_s == 10.0
    assert ended(effects) == {"a1": ("setup-failed", "server"), "b1": ("setup-failed", "server")}


def test_failed_report_before_media_is_setup_failed(rig: Rig) -> None:
    call_id = rig.answered_call()
    rig.engine.media("a1", "r", call_id, "connected", "relay", "relay", "opus")
    effects = rig.engine.media("b1", "r2", call_id, "failed", None, None, None)
    assert reply(effects, "b1")["type"] == "ack"
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "setup-failed",
        "failed",
        "server",
    )


def test_failed_report_after_media_is_media_lost(rig: Rig) -> None:
    call_id = rig.media_call()
    effects = rig.engine.media("a1", "r", call_id, "failed", None, None, None)
    record = final(effects)
    assert (record.reason, record.disposition) == ("media-lost", "answered")


def test_no_stats_at_all_for_the_silence_timeout_is_media_lost(rig: Rig) -> None:
    rig.media_call()
    assert rig.engine.next_deadline() == rig.clock.monotonic() + 8
    rig.clock.advance(7.9)
    assert rig.engine.tick() == []
    rig.clock.advance(0.1)
    effects = rig.engine.tick()
    record = final(effects)
    assert (record.reason, record.disposition, record.ended_by) == (
        "media-lost",
        "answered",
        "server",
    )
    assert record.duration_s == 8.0


def test_stats_with_growing_packets_keep_a_healthy_call_up(rig: Rig) -> None:
    call_id = rig.media_call()
    for second in range(1, 61):
        rig.clock.advance(1)
        if second % 5 == 0:
            for device in ("a1", "b1"):
                effects = rig.stats(device, call_id, inbound=second * 50)
                assert reply(effects, device)["type"] == "ack"
        assert rig.engine.tick() == [], second
    assert rig.engine.call_of("a1") == call_id


def test_one_side_stops_receiving_is_media_lost(rig: Rig) -> None:
    call_id = rig.media_call()
    start = rig.clock.monotonic()
    rig.clock.advance(2)
    rig.stats("a1", call_id, inbound=100)
    rig.stats("b1", call_id, inbound=100)  # b1 receives nothing more from here on
    for step in (1, 2):
        rig.clock.advance(3)
        rig.stats("a1", call_id, inbound=100 + step * 150)
        rig.stats("b1", call_id, inbound=100)
        assert rig.engine.tick() == []
    assert rig.engine.next_deadline() == start + 2 + 8
    rig.clock.advance(2)
    record = final(rig.engine.tick())
    assert (record.reason, record.ended_by, record.duration_s) == ("media-lost", "server", 10.0)


def test_silence_deadline_follows_the_last_increase(rig: Rig) -> None:
    call_id = rig.media_call()
    start = rig.clock.monotonic()
    rig.clock.advance(4)
    rig.stats("a1", call_id, inbound=10)
    rig.stats("b1", call_id, inbound=10)
    assert rig.engine.next_deadline() == start + 4 + 8
    rig.clock.advance(4)
    rig.stats("a1", call_id, inbound=10)  # no increase: the deadline does not move
    rig.stats("b1", call_id, inbound=20)
    assert rig.engine.next_deadline() == start + 4 + 8


def test_stats_before_answer_are_a_conflict_and_reports_are_recorded(rig: Rig) -> None:
    call_id = rig.ringing_call()
    assert reply(rig.stats("a1", call_id, 1), "a1")["code"] == "conflict"
    rig.engine.answer("b1", "r", call_id, "v=0\r\n")
    effects = rig.stats("b1", call_id, 5)
    report = effects[0]
    assert isinstance(report, StatsReport)
    assert (report.call_id, report.device_id, report.party, report.final) == (
        call_id,
        "b1",
        Party.CALLEE,
        False,
    )
    assert [s.direction for s in report.streams] == ["inbound", "outbound"]


def test_final_stats_after_the_call_ended_are_still_recorded_for_a_while(rig: Rig) -> None:
    call_id = rig.media_call()
    rig.engine.hangup("a1", "r", call_id)
    rig.clock.advance(3)
    effects = rig.stats("b1", call_id, 400, final=True)
    assert isinstance(effects[0], StatsReport) and effects[0].final
    assert reply(effects, "b1")["type"] == "ack"
    assert reply(rig.stats("c1", call_id, 1, final=True), "c1")["code"] == "not-found"
    assert reply(rig.stats("b2", call_id, 1, final=True), "b2")["code"] == "not-found"
    rig.clock.advance(7)
    assert rig.engine.tick() == []
    assert rig.engine.next_deadline() is None
    assert reply(rig.stats("b1", call_id, 1, final=True), "b1")["code"] == "not-found"


def test_media_and_stats_from_the_answered_elsewhere_device_are_conflicts(rig: Rig) -> None:
    call_id = rig.answered_call("b1")
    effects = rig.engine.media("b2", "r", call_id, "connected", "relay", "relay", None)
    assert reply(effects, "b2")["code"] == "conflict"
    assert reply(rig.stats("b2", call_id, 3), "b2")["code"] == "conflict"
