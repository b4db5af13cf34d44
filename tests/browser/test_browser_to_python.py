"""The browser softphone calls the Python client (`callgate answer --record`): the recording
holds the browser's fake-microphone tone, and the browser hears the Python side's tone."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from callgate.client.audio import dominant_frequency
from tests.browser.helpers import (
    FAKE_MIC_HZ,
    colleague,
    screenshot,
    sign_in,
    wait_for_audio,
    wait_online,
    wait_status,
)
from tests.cli_process import COMMAND
from tests.e2e.helpers import Serve, password_of


def answering_machine(serve: Serve, tmp_path: Path, recording: Path) -> subprocess.Popen[str]:
    """`callgate answer` as bob: answers one call, sends a 440 Hz tone, records what it hears."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env.update(
        CALLGATE_SERVER=serve.url,
        CALLGATE_USER="bob",
        CALLGATE_PASSWORD=password_of("bob"),
        CALLGATE_CONFIG_DIR=str(tmp_path / "bob-config"),
    )
    args = ["answer", "--count", "1", "--tone", "440", "--record", str(recording), "--json"]
    return subprocess.Popen(
        [*COMMAND, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_browser_calls_the_python_client_and_each_hears_the_other(
    serve: Serve, new_page: Any, tmp_path: Path
) -> None:
    recording = tmp_path / "bob.wav"
    bob = answering_machine(serve, tmp_path, recording)
    try:
        assert bob.stdout is not None
        ready = json.loads(bob.stdout.readline())
        assert ready["event"] == "ready" and ready["user"] == "bob", ready

        alice = new_page()
        sign_in(alice, serve.url, "alice")
        wait_online(alice, "bob")
        colleague(alice, "bob").get_by_role("button", name="Call").click()
        wait_status(alice, "Connected with Bob Baker", timeout=20_000)
        alice.locator("#q-path", has_text="Relay").wait_for()
        # three seconds of the Python side's audio decoded (not concealment) by the browser,
        # while its own tone goes into bob's recording: an outcome, not a fixed sleep
        heard = wait_for_audio(alice, samples=3 * 48_000, packets=150, fresh=False)
        screenshot(alice, "softphone-call-to-python-client")
        alice.get_by_role("button", name="Hang up").click()
        wait_status(alice, "You hung up")

        out, errors = bob.communicate(timeout=60)  # its exit, slow on a loaded machine
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.communicate()
    assert bob.returncode == 0, errors
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [e["event"] for e in events if e["event"] in ("incoming", "connected", "ended")] == [
        "incoming",
        "connected",
        "ended",
    ], events
    assert abs(dominant_frequency(recording) - FAKE_MIC_HZ) < 10.0
    assert heard["samplesReceived"] - heard["concealedSamples"] > 48_000, heard
