"""Things breaking mid-call: a client process killed, the server killed and restarted.

A killed softphone must not leave its peer talking to nobody: the server notices the lost socket
(or the silence) and ends the call. A killed server must not leave call records open forever: the
next start finalizes them as `server-restart` with a believable end time.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callgate.client.errors import SignalingError
from callgate.client.signaling import SignalingClient
from tests.e2e.helpers import (
    SILENCE_TIMEOUT,
    Serve,
    cdr_row,
    connected,
    final_cdr,
    finish,
    next_of,
    read_event,
    start_cli,
    wait_for,
)


async def lost(client: SignalingClient, timeout: float = 30.0) -> None:
    """Read events until the socket is reported closed."""
    with pytest.raises(SignalingError) as closed:
        while True:
            await client.next_event(timeout=timeout)
    assert closed.value.code == "closed"


STATS_INTERVAL = 2.0  # the softphone's call.stats period (MediaOptions.stats_interval)


def db_time(value: datetime | None) -> datetime:
    """A time from the store: timezone-aware (UTC) on every backend."""
    assert value is not None, "time not set"
    assert value.utcoffset() == timedelta(0), value
    return value


@pytest.mark.timeout(180)  # CLI softphones and restarts are slow on a loaded machine
@pytest.mark.parametrize(
    ("how", "expected"),
    [
        # the process dies: its socket closes, the server notices at once
        (signal.SIGKILL, {("callee-disconnected", "callee"), ("media-lost", "server")}),
        # the process freezes (a laptop lid closed): the socket stays, only the audio stops
        (signal.SIGSTOP, {("media-lost", "server")}),
    ],
    ids=["killed", "frozen"],
)
async def test_losing_the_callee_process_mid_call_ends_the_call_for_the_caller(
    serve: Serve, tmp: Path, how: signal.Signals, expected: set[tuple[str, str]]
) -> None:
    bob_events: list[dict[str, Any]] = []
    alice_events: list[dict[str, Any]] = []
    bob = await start_cli(
        serve, "bob", "answer", "--count", "1", "--record", str(tmp / "bob.wav"), config_dir=tmp
    )
    alice: asyncio.subprocess.Process | None = None
    try:
        await read_event(bob, "ready", 60, bob_events)
        launched = time.monotonic()
        alice = await start_cli(
            serve, "alice", "call", "bob", "--tone", "440", "--duration", "30", config_dir=tmp
        )
        connected_event = await read_event(alice, "connected", 60, alice_events)
        await read_event(bob, "connected", 30, bob_events)
        call_id = connected_event["call_id"]
        await asyncio.sleep(1.0)  # some audio and a stats report or two
        bob.send_signal(how)
        killed_at = time.monotonic()
        ended = await read_event(alice, "ended", SILENCE_TIMEOUT + 30, alice_events)
        noticed = time.monotonic() - killed_at
        lasted = time.monotonic() - launched  # an upper bound of the call's true duration
        code, alice_events, errors = await finish(alice, alice_events, timeout=30)
    finally:
        for process in (alice, bob):
            if process is not None and process.returncode is None:
                process.kill()  # SIGKILL ends a stopped process too
                await process.wait()

    assert ended["call_id"] == call_id
    assert (ended["reason"], ended["ended_by"]) in expected, ended
    # worst case: the last stats report still showing new packets came one stats interval
    # (2 s) after the loss, and the silence timeout runs from there; a loaded machine adds its
    # own delay, so the bound is generous (it catches a watchdog that waits for a later event)
    assert noticed <= SILENCE_TIMEOUT + STATS_INTERVAL + 15, noticed
    assert code == 1, (alice_events, errors)  # the call did not end with a hangup
    row = await final_cdr(serve.database, call_id)
    assert row["disposition"] == "answered"
    assert (row["reason"], row["ended_by"]) == (ended["reason"], ended["ended_by"])
    assert row["media_path"] == "relay/relay"
    assert row["duration_s"] is not None and 1.0 <= row["duration_s"] <= lasted


@pytest.mark.timeout(180)  # CLI softphones and restarts are slow on a loaded machine
async def test_calls_open_when_the_server_dies_are_finalized_at_the_next_start(
    tmp: Path, new_server: Callable[[Path], Serve], offer_sdp: str, answer_sdp: str
) -> None:
    server = new_server(tmp / "restart")
    # the calls must still be open at the kill however slowly a loaded machine gets there: no
    # watchdog may end them first (their media is reported, never sent)
    server.env.update({f"CALLGATE_CALLS__{name}_TIMEOUT": "300" for name in ("RING", "SILENCE")})
    server.add_users(["dave"])
    server.start()
    try:
        async with (
            connected(server, "alice") as alice,
            connected(server, "bob") as bob,
            connected(server, "carol") as carol,
            connected(server, "dave") as dave,
        ):
            # alice ↔ bob answered and in media; carol → dave ringing
            talking = (await alice.request("call.invite", to="bob", sdp=offer_sdp))["call_id"]
            await next_of(bob, "call.incoming", talking)
            await bob.request("call.answer", call_id=talking, sdp=answer_sdp)
            await next_of(alice, "call.answered", talking)
            for client in (alice, bob):
                await client.request("call.media", call_id=talking, state="connected")
            ringing = (await carol.request("call.invite", to="dave", sdp=offer_sdp))["call_id"]
            await next_of(dave, "call.incoming", ringing)

            def both_written() -> list[dict[str, Any]] | None:
                answered = cdr_row(server.database, talking)
                rung = cdr_row(server.database, ringing)
                if answered is None or answered["answer_at"] is None or rung is None:
                    return None
                return [answered, rung]

            # the records are written in batches off the event loop (the answer too, which the
            # restart must find): wait for them, where a fixed 0.5 s could be too short
            open_rows = await wait_for(both_written, 30, "both calls' records written")
            assert all(r is not None and r["end_at"] is None for r in open_rows), open_rows
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)
            killed_at = datetime.now(UTC)
            assert server.proc.wait(10) == -signal.SIGKILL
            # the clients notice the server is gone
            for client in (alice, bob, carol, dave):
                await lost(client)
        still_open = cdr_row(server.database, talking)
        assert still_open is not None and still_open["end_at"] is None

        restart = datetime.now(UTC)
        server.start()
        answered = await final_cdr(server.database, talking)
        unanswered = await final_cdr(server.database, ringing)
    finally:
        code = server.stop() if server.proc and server.proc.poll() is None else 0
        server.kill()
    assert code == 0, server.log()

    assert (answered["disposition"], answered["ended_by"], answered["reason"]) == (
        "answered", "server", "server-restart",
    )  # fmt: skip
    answer_at, end_at = db_time(answered["answer_at"]), db_time(answered["end_at"])
    assert answer_at <= end_at <= restart, (answer_at, end_at, restart)
    assert end_at <= killed_at  # the last sign of life was before the kill
    assert answered["duration_s"] == pytest.approx((end_at - answer_at).total_seconds(), abs=0.01)
    assert (unanswered["disposition"], unanswered["ended_by"], unanswered["reason"]) == (
        "failed", "server", "server-restart",
    )  # fmt: skip
    assert db_time(unanswered["invite_at"]) <= db_time(unanswered["end_at"]) <= restart
    assert "finalized 2 call record(s) left open" in server.log(), server.log()
