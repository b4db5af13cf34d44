"""Call-bound relaying end to end: with `turn.call_bound` on, a real relay-only call between two
CLI processes still connects and carries the caller's tone, because each party may reach exactly
the relayed address of the other; and the relay refused nothing the call needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callgate.client.audio import dominant_frequency, write_tone_wav
from tests.e2e.helpers import Serve, finish, new_serve, read_event, start_cli

TONE_HZ = 520.0


@pytest.fixture(scope="module")
def bound_serve(tmp_path_factory: pytest.TempPathFactory, user_template: Path) -> Iterator[Serve]:
    server = new_serve(
        tmp_path_factory.mktemp("callbound"),
        template=user_template,
        CALLGATE_TURN__CALL_BOUND="true",
    ).start()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log()


def refused(serve: Serve) -> float:
    """The relay's count of refused permissions, from /metrics."""
    text = httpx.get(serve.metrics_url, timeout=5).text
    for line in text.splitlines():
        if line.startswith("callgate_turn_peers_refused_total "):
            return float(line.split()[1])
    raise AssertionError("no callgate_turn_peers_refused_total in /metrics")


@pytest.mark.timeout(180)  # CLI softphones start slowly on a loaded machine
async def test_call_bound_relay_carries_a_call_between_its_parties(
    bound_serve: Serve, tmp: Path
) -> None:
    tone = write_tone_wav(tmp / "tone.wav", TONE_HZ, 4)
    recording = tmp / "bob.wav"
    bob_events: list[dict[str, Any]] = []
    bob = await start_cli(
        bound_serve, "bob", "answer", "--count", "1", "--record", str(recording),
        config_dir=tmp,
    )  # fmt: skip
    await read_event(bob, "ready", 60, bob_events)
    alice = await start_cli(
        bound_serve, "alice", "call", "bob", "--play", str(tone), "--duration", "2",
        config_dir=tmp,
    )  # fmt: skip
    alice_code, alice_events, alice_err = await finish(alice, [], timeout=60)
    bob_code, bob_events, bob_err = await finish(bob, bob_events, timeout=60)

    assert alice_code == 0, (alice_events, alice_err)
    assert bob_code == 0, (bob_events, bob_err)
    connected = [e for e in alice_events if e["event"] == "connected"]
    assert connected and connected[0]["local_candidate_type"] == "relay", alice_events
    heard = dominant_frequency(recording)
    assert abs(heard - TONE_HZ) < 5.0, f"bob's recording peaks at {heard:.1f} Hz"
    assert refused(bound_serve) == 0, "the relay refused a permission the call needed"
