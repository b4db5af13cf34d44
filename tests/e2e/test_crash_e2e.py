"""`kill -9` of `callgate serve` five seconds into a real call (two CLI softphones sending tones
through the relay), then a restart on the same store: the call's record ends between the last
heartbeat of live calls before the kill and the kill, its relay sessions are closed with the bytes
they carried (their counters are persisted while they grow), and the audit log has a signed
checkpoint (one at start, then every minute) that still verifies.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from callgate.storage.models import AuditCheckpoint
from tests.e2e.helpers import (
    RELAY_SESSIONS,
    Serve,
    _engine,
    cdr_row,
    final_cdr,
    read_event,
    rows_of,
    start_cli,
    wait_for,
)

IN_CALL = 5.0  # seconds of media before the kill
CHECKPOINTS: Table = AuditCheckpoint.__table__  # type: ignore[assignment]


def checkpoints(db: str) -> int:
    with _engine(db).connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(CHECKPOINTS)) or 0)


@pytest.mark.timeout(180)  # CLI softphones and restarts are slow on a loaded machine
async def test_a_killed_server_leaves_truthful_records_of_the_call_it_carried(
    tmp: Path, new_server: Callable[[Path], Serve]
) -> None:
    server = new_server(tmp / "crash")
    server.start()
    bob_events: list[dict[str, Any]] = []
    alice_events: list[dict[str, Any]] = []
    processes: list[asyncio.subprocess.Process] = []
    try:
        bob = await start_cli(server, "bob", "answer", "--count", "1", "--tone", "880",
                              config_dir=tmp)  # fmt: skip
        processes.append(bob)
        await read_event(bob, "ready", 60, bob_events)
        alice = await start_cli(server, "alice", "call", "bob", "--tone", "440",
                                "--duration", "60", config_dir=tmp)  # fmt: skip
        processes.append(alice)
        call_id = (await read_event(alice, "connected", 60, alice_events))["call_id"]
        await read_event(bob, "connected", 30, bob_events)
        await asyncio.sleep(IN_CALL)
        # The last sign of life before the kill: a heartbeat stamped after the media above, and
        # relay counters persisted with the media's packets. Waited for (a loaded machine writes
        # late), then the kill at once: the record must end no earlier than that heartbeat.
        media_until = datetime.now(UTC)

        def alive_and_counted() -> datetime | None:
            row = cdr_row(server.database, call_id)
            beat = row["last_alive_at"] if row is not None else None
            open_sessions = rows_of(server.database, RELAY_SESSIONS,
                                    RELAY_SESSIONS.c.ended_at.is_(None))  # fmt: skip
            counted = len(open_sessions) >= 2 and all(
                s["packets_to_peer"] > 50 and s["packets_to_client"] > 50 for s in open_sessions
            )
            return beat if beat is not None and beat >= media_until and counted else None

        last_beat = await wait_for(alive_and_counted, 60, "a heartbeat and persisted counters")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        killed_at = datetime.now(UTC)
        assert server.proc.wait(10) == -signal.SIGKILL
        row = cdr_row(server.database, call_id)
        assert row is not None and row["end_at"] is None  # open, as the crash left it

        server.start()
        cdr = await final_cdr(server.database, call_id)
        verified = server.cli("audit", "verify", "--json")
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        code = server.stop() if server.proc and server.proc.poll() is None else 0
        server.kill()
    assert code == 0, server.log()

    # the record: answered, ended by the restart, between the last heartbeat the test saw and
    # the kill (the truth; how close the heartbeat came to the kill is the machine's doing)
    assert (cdr["disposition"], cdr["ended_by"], cdr["reason"]) == (
        "answered", "server", "server-restart",
    )  # fmt: skip
    truth = (killed_at - cdr["answer_at"]).total_seconds()
    assert truth >= IN_CALL
    print(f"killed {truth:.2f} s after the answer; the record says {cdr['duration_s']:.2f} s")
    assert last_beat <= cdr["end_at"] <= killed_at, (last_beat, cdr["end_at"], killed_at)
    assert cdr["duration_s"] == pytest.approx(
        (cdr["end_at"] - cdr["answer_at"]).total_seconds(), abs=0.01
    )

    # its relay sessions: closed at the restart with the traffic they carried before the kill
    ids = json.loads(cdr["relay_allocation_ids"] or "[]")
    sessions = rows_of(server.database, RELAY_SESSIONS, RELAY_SESSIONS.c.allocation_id.in_(ids))
    assert sorted(s["user"] for s in sessions) == ["alice", "bob"], sessions
    for session in sessions:
        assert session["end_reason"] == "server-restart", session
        assert session["ended_at"] is not None and session["ended_at"] <= killed_at, session
        # 5 s of Opus each way: hundreds of packets, not a few STUN checks
        assert session["packets_to_peer"] > 50 and session["packets_to_client"] > 50, session
    assert cdr["relay_bytes"] == sum(s["bytes_to_peer"] + s["bytes_to_client"] for s in sessions)
    open_sessions = rows_of(server.database, RELAY_SESSIONS, RELAY_SESSIONS.c.ended_at.is_(None))
    assert open_sessions == []
    closed = re.search(r"closed (\d+) relay session\(s\) left open", server.log())
    assert closed and int(closed[1]) >= 2, server.log()

    # the audit log: signed checkpoints exist (one at each start), and the chain verifies
    assert checkpoints(server.database) >= 2
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["checkpoints"] >= 2, report
