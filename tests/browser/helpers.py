"""Helpers for the browser tests: Debian's Chromium through Playwright, signed-in pages, waits,
screenshots. Nothing here downloads a browser (`playwright install` is never run)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import callgate, password_of

CHROMIUM = Path(os.environ.get("CALLGATE_CHROMIUM", "/usr/bin/chromium"))
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"

# The fake microphone plays this tone (a WAV file), so the far end can check what it hears.
FAKE_MIC_HZ = 660.0
# Headless, quiet, and with fake media: no prompt, no device, no network chatter.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
]


def require_browser() -> Any:
    """The Playwright module, or a skip (locally) / failure (CI=true) saying what is missing."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        sync_api = None
        missing.append("the playwright Python package (pip install -e '.[test]')")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return sync_api


def add_user(data_dir: Path, handle: str, *, role: str = "user", display_name: str = "") -> None:
    args = ["user", "add", handle, "--role", role, "--data-dir", str(data_dir), "--password-stdin"]
    if display_name:
        args += ["--display-name", display_name]
    result = callgate(*args, stdin=password_of(handle) + "\n")
    assert result.returncode == 0, result.stderr


def sign_in(page: Any, url: str, handle: str, path: str = "/") -> None:
    """Open `path` and sign in through the form (the token stays in this tab's sessionStorage)."""
    page.goto(url + path)
    page.get_by_label("User name").fill(handle)
    page.get_by_label("Password").fill(password_of(handle))
    page.get_by_role("button", name="Sign in").click()


def colleague(page: Any, handle: str) -> Any:
    return page.locator(f'li.colleague[data-handle="{handle}"]')


def wait_online(page: Any, handle: str, timeout: float = 30_000) -> None:
    """Wait until our signaling is up and `handle` shows as online in the list."""
    page.locator("#conn.ok").wait_for(timeout=timeout)
    page.locator(f'li.colleague[data-handle="{handle}"][data-presence="online"]').wait_for(
        timeout=timeout
    )


def call_status(page: Any) -> str:
    return str(page.locator("#call-status").inner_text())


def wait_status(page: Any, pattern: str, timeout: float = 30_000) -> str:
    """Wait until the aria-live call status matches `pattern` (a regex); returns the text."""
    locator = page.locator("#call-status")
    locator.filter(has_text=re.compile(pattern)).wait_for(timeout=timeout)
    return str(locator.inner_text())


def quality(page: Any) -> dict[str, Any]:
    """The call's figures from getStats, as the softphone computes them."""
    result = page.evaluate("() => window.callgate.quality()")
    assert isinstance(result, dict), result
    return result


def wait_for_audio(
    page: Any, samples: int, packets: int, *, fresh: bool = True, timeout: float = 60.0
) -> dict[str, Any]:
    """Wait until `page` has decoded `samples` samples of real audio (not the concealment a jitter
    buffer plays when nothing arrives) from `packets` packets: counted from now (`fresh`) or from
    the start of the call. Returns the last figures. An outcome, not a duration: a loaded machine
    runs the browsers late, so the deadline is generous and the happy path returns at once."""
    zero = {"samplesReceived": 0, "concealedSamples": 0, "packetsReceived": 0}
    before = quality(page) if fresh else zero
    deadline = time.monotonic() + timeout
    while True:
        after = quality(page)
        decoded = (after["samplesReceived"] - after["concealedSamples"]) - (
            before["samplesReceived"] - before["concealedSamples"]
        )
        arrived = after["packetsReceived"] - before["packetsReceived"]
        if decoded >= samples and arrived >= packets:
            return after
        assert time.monotonic() < deadline, f"{decoded} samples, {arrived} packets in {timeout} s"
        time.sleep(0.2)


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def clear_screenshots() -> None:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
