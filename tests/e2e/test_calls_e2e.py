"""A real relay-only call between two `callgate` CLI processes through `callgate serve`.

bob answers and records, alice calls and plays a 660 Hz tone (not the 440 Hz of other tests, so a
match proves it is alice's audio). Then the record: the CDR field by field (through
`callgate cdr list --json` on the running server's data dir), the four quality rows, and the relay
sessions linked to the call carrying its bytes.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callgate.client.audio import dominant_frequency, write_tone_wav
from callgate.records.quality import StreamStats, assess
from tests.e2e.helpers import (
    LOOPBACK,
    Serve,
    cdr_via_cli,
    final_cdr,
    finish,
    quality_rows,
    read_event,
    relay_sessions,
    start_cli,
    wait_for,
)

TONE_HZ = 660.0
DURATION = 3.0


def ts(value: str | None) -> datetime:
    """An ISO 8601 time from `callgate cdr list --json`."""
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def db_time(value: datetime | None) -> datetime:
    """A time from the store: timezone-aware (UTC) on every backend."""
    assert value is not None, "time not set"
    assert value.utcoffset() == timedelta(0), value
    return value


@pytest.mark.timeout(180)  # CLI softphones start slowly on a loaded machine
async def test_relay_only_call_between_cli_processes_is_heard_and_recorded(
    serve: Serve, tmp: Path
) -> None:
    tone = write_tone_wav(tmp / "tone.wav", TONE_HZ, DURATION + 2)
    recording = tmp / "bob.wav"
    bob_events: list[dict[str, Any]] = []
    alice_events: list[dict[str, Any]] = []

    bob = await start_cli(
        serve, "bob", "answer", "--count", "1", "--record", str(recording), "--device", "desk",
        config_dir=tmp,
    )  # fmt: skip
    ready = await read_event(bob, "ready", 60, bob_events)
    started = time.time()
    alice = await start_cli(
        serve, "alice", "call", "bob", "--play", str(tone), "--duration", str(DURATION),
        "--device", "laptop", config_dir=tmp,
    )  # fmt: skip
    alice_code, alice_events, alice_err = await finish(alice, alice_events, timeout=60)
    bob_code, bob_events, bob_err = await finish(bob, bob_events, timeout=60)
    finished = time.time()

    # what the people at both ends noticed
    assert alice_code == 0, (alice_events, alice_err)
    assert bob_code == 0, (bob_events, bob_err)
    names = [e["event"] for e in alice_events]
    assert names[:2] == ["calling", "ringing"] and names[-1] == "ended", names
    assert "answered" in names and "connected" in names, names
    call_id = alice_events[0]["call_id"]
    assert call_id and all(e.get("call_id") == call_id for e in alice_events)
    assert alice_events[-1]["reason"] == "hangup" and alice_events[-1]["ended_by"] == "caller"
    assert [e["event"] for e in bob_events] == [
        "ready",
        "incoming",
        "answered",
        "connected",
        "ended",
    ]
    assert bob_events[1]["from"]["handle"] == "alice"
    assert bob_events[-1]["reason"] == "hangup" and bob_events[-1]["ended_by"] == "caller"
    for event in (*alice_events, *bob_events):
        if event["event"] == "connected":
            assert (event["local_candidate_type"], event["remote_candidate_type"]) == (
                "relay",
                "relay",
            ), event
            assert event.get("codec") == "opus", event
    heard = dominant_frequency(recording)
    assert abs(heard - TONE_HZ) < 5.0, f"bob's recording peaks at {heard:.1f} Hz"

    # the call detail record, as an admin's `callgate cdr list --json` shows it
    await final_cdr(serve.database, call_id)

    def linked() -> dict[str, Any] | None:
        record = cdr_via_cli(serve, call_id)
        return record if record["relay_bytes"] and record["relay_used"] else None

    cdr = await wait_for(linked, 30, "relay sessions linked to the CDR", interval=0.5)
    assert cdr["caller_user"] == "alice" and cdr["callee_user"] == "bob"
    assert cdr["caller_device"] and cdr["callee_device"]
    assert cdr["callee_device"] == ready["device_id"]
    assert cdr["caller_device"] != cdr["callee_device"]
    assert cdr["caller_address"] == LOOPBACK and cdr["callee_address"] == LOOPBACK
    assert cdr["direction"] == "internal"
    invite, ring, answer, end = (
        ts(cdr[k]) for k in ("invite_at", "ring_at", "answer_at", "end_at")
    )
    assert started - 1 <= invite.timestamp() and end.timestamp() <= finished + 1
    assert invite <= ring <= answer <= end, (invite, ring, answer, end)
    assert cdr["duration_s"] == pytest.approx((end - answer).total_seconds(), abs=0.01)
    # --duration counts from media; the CDR from answer, before media; both within the run
    assert DURATION - 0.2 <= cdr["duration_s"] <= finished - started, cdr["duration_s"]
    assert (cdr["disposition"], cdr["ended_by"], cdr["reason"]) == ("answered", "caller", "hangup")
    assert cdr["media_path"] == "relay/relay"
    assert cdr["codec"] == "opus"
    assert cdr["encryption"] == "dtls-srtp"
    assert cdr["relay_used"].startswith(f"{LOOPBACK}:"), cdr["relay_used"]
    low, high = serve.relay_ports
    for relay in cdr["relay_used"].split(", "):
        host, port = relay.rsplit(":", 1)
        assert host == LOOPBACK and low <= int(port) <= high, relay
    assert cdr["relay_bytes"] > 10_000  # 3 s of Opus both ways, not a few STUN checks
    assert len(cdr["relay_allocation_ids"]) == 2, cdr["relay_allocation_ids"]

    # the relay sessions named by the CDR: alice's and bob's, carrying the call's bytes
    ids = cdr["relay_allocation_ids"]
    sessions = relay_sessions(serve.database, ids)
    assert sorted(s["user"] for s in sessions) == ["alice", "bob"], sessions
    total = sum(s["bytes_to_peer"] + s["bytes_to_client"] for s in sessions)
    assert total == cdr["relay_bytes"]
    for session in sessions:
        assert session["packets_to_peer"] > 50 and session["packets_to_client"] > 50, session
        assert session["relay_ip"] == LOOPBACK and low <= session["relay_port"] <= high
        # allocated around the invite (candidates are gathered just before it), freed after the end
        assert invite.timestamp() - 15 <= db_time(session["started_at"]).timestamp()
        assert db_time(session["started_at"]) <= end <= db_time(session["ended_at"])
    used = {f"{s['relay_ip']}:{s['relay_port']}" for s in sessions}
    assert set(cdr["relay_used"].split(", ")) == used

    # quality: caller and callee, inbound and outbound, all with packets; the stored verdict is the
    # one the reported figures give (jitter, and so MOS and good/poor, depend on the machine's load)
    rows = quality_rows(serve.database, call_id)
    assert [(r["reporter"], r["direction"]) for r in rows] == [
        ("callee", "inbound"),
        ("callee", "outbound"),
        ("caller", "inbound"),
        ("caller", "outbound"),
    ], rows
    for row in rows:
        assert row["kind"] == "audio"
        assert row["packets"] > 50, row  # 20 ms Opus frames over ~3 s
        verdict = assess(
            StreamStats(
                kind="audio",
                direction=row["direction"],
                packets=row["packets"],
                packets_lost=row["packets_lost"],
                jitter_ms=row["jitter_ms"],
                rtt_ms=row["rtt_ms"],
                concealed_ratio=row["concealed_ratio"],
            )
        )
        assert row["mos"] == pytest.approx(verdict.mos, abs=0.01), (row, verdict)
        assert row["classification"] == verdict.classification, (row, verdict)
        assert json.loads(row["poor_reasons"]) == list(verdict.poor_reasons), row
        assert row["loss_rate"] < 0.05, row  # loopback loses nothing
    assert any(row["final"] for row in rows), rows


@pytest.mark.timeout(180)  # CLI softphones start slowly on a loaded machine
async def test_a_call_right_after_another_links_only_its_own_relay_sessions(
    serve: Serve, tmp: Path
) -> None:
    bob_events: list[dict[str, Any]] = []
    bob = await start_cli(serve, "bob", "answer", "--count", "2", config_dir=tmp)
    await read_event(bob, "ready", 60, bob_events)
    call_ids = []
    for _ in range(2):  # hang up, redial at once
        events: list[dict[str, Any]] = []
        alice = await start_cli(
            serve, "alice", "call", "bob", "--tone", "500", "--duration", "1", config_dir=tmp
        )
        code, events, errors = await finish(alice, events, timeout=60)
        assert code == 0, (events, errors)
        call_ids.append(events[0]["call_id"])
    assert (await finish(bob, bob_events))[0] == 0

    def both_linked() -> list[dict[str, Any]] | None:
        records = [cdr_via_cli(serve, call_id) for call_id in call_ids]
        return records if all(r["relay_bytes"] for r in records) else None

    first, second = await wait_for(both_linked, 30, "both calls linked", interval=0.5)
    assert len(first["relay_allocation_ids"]) == 2, first["relay_allocation_ids"]
    assert not set(first["relay_allocation_ids"]) & set(second["relay_allocation_ids"]), (
        first["relay_allocation_ids"],
        second["relay_allocation_ids"],
    )
    assert len(second["relay_allocation_ids"]) == 2, second["relay_allocation_ids"]
