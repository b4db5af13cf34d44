"""Two CallSessions in one process, signaling through an in-memory relay, media through our TURN.

The hello both get is what the server will send: our TURN server with TURN REST credentials and
the relay-only policy. The caller plays a 440 Hz tone for ~2 s, the callee records; the recording's
dominant frequency must be the tone's, and both sides must report media over relay/relay.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from callgate.client.audio import dominant_frequency
from callgate.client.softphone import (
    SETUP_TIMEOUT,
    CallResult,
    MediaOptions,
    answer_calls,
    place_call,
)
from callgate.types import Transport
from tests.conftest import run_turn_server, server_address
from tests.integration.fake_signaling import FakeRelay, hello_for

TONE = 440.0


@pytest.mark.timeout(120)  # aiortc's handshakes are slow on a loaded machine
async def test_relay_only_call_carries_the_callers_tone(tmp_path: Path) -> None:
    recording = tmp_path / "callee.wav"
    relay = FakeRelay()
    alice, bob = relay.endpoint("alice"), relay.endpoint("bob")
    events: list[tuple[str, str, dict[str, Any]]] = []

    def recorder(who: str) -> Any:
        return lambda name, fields: events.append((who, name, fields))

    async with run_turn_server() as server:
        turn = server_address(server, Transport.UDP)
        callee = asyncio.create_task(
            answer_calls(
                bob,
                hello_for("bob", turn),
                MediaOptions(record=recording, stats_interval=0.5),
                count=1,
                on_event=recorder("bob"),
            )
        )
        caller = place_call(
            alice,
            hello_for("alice", turn),
            "bob",
            MediaOptions(tone=TONE, stats_interval=0.5),
            duration=2.0,
            on_event=recorder("alice"),
        )
        result: CallResult = await asyncio.wait_for(caller, 60)
        (answered,) = await asyncio.wait_for(callee, 30)

    for side in (result, answered):
        assert side.connected, events
        assert side.reason == "hangup"
        assert (side.local_candidate_type, side.remote_candidate_type) == ("relay", "relay")
        assert side.codec == "opus"
    assert result.ended_by == "caller" and result.ok and answered.ok

    for endpoint in (alice, bob):
        (media,) = endpoint.of_type("call.media")
        assert media["state"] == "connected"
        assert media["local_candidate_type"] == "relay"
        assert media["remote_candidate_type"] == "relay"
        assert media["codec"] == "opus"
        stats = endpoint.of_type("call.stats")
        assert stats, f"{endpoint.handle} sent no call.stats"
        assert stats[-1]["final"] is True
        assert [s["final"] for s in stats[:-1]] == [False] * (len(stats) - 1)
        streams = {s["direction"]: s for s in stats[-1]["streams"]}
        assert streams["outbound"]["packets"] > 50  # 20 ms frames for ~2 s
        assert streams["inbound"]["packets"] > 50
        assert streams["inbound"]["jitter_ms"] is not None

    names = [(who, name) for who, name, _ in events]
    assert ("alice", "ringing") in names and ("bob", "incoming") in names
    assert ("alice", "connected") in names and ("bob", "connected") in names
    assert abs(dominant_frequency(recording) - TONE) < 5.0


@pytest.mark.timeout(120)
async def test_a_call_without_a_usable_path_fails_in_bounded_time() -> None:
    """The callee got no ICE servers under relay policy: no candidates, so ICE cannot succeed.

    Both sides end within their setup bound, not connected, and the call is not `ok`.
    """
    relay = FakeRelay()
    alice, bob = relay.endpoint("alice"), relay.endpoint("bob")
    async with run_turn_server() as server:
        turn = server_address(server, Transport.UDP)
        nothing = {**hello_for("bob", turn), "ice_servers": []}
        callee = asyncio.create_task(
            answer_calls(bob, nothing, MediaOptions(), count=1, setup_timeout=3.0)
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await asyncio.wait_for(
            place_call(alice, hello_for("alice", turn), "bob", MediaOptions(), setup_timeout=3.0),
            60,
        )
        (answered,) = await asyncio.wait_for(callee, 60)
        # bounded by the 3 s given, not the default (20 s): a loaded machine's slack is between
        assert loop.time() - started < SETUP_TIMEOUT
    assert not result.connected and not result.ok
    assert not answered.connected and not answered.ok
    assert result.reason is not None
    sent = [m["state"] for m in alice.of_type("call.media") + bob.of_type("call.media")]
    assert "connected" not in sent
