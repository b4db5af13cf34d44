"""Fixtures for the browser tests: one `callgate serve` with users of every role,
and one headless Debian Chromium (fake microphone playing a tone) per session.

Locally, a missing Chromium or Playwright skips these tests with the reason; with CI=true it
fails them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.client.audio import write_tone_wav
from tests.browser.helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FAKE_MIC_HZ,
    add_user,
    require_browser,
)
from tests.e2e.helpers import Serve, http_json, new_serve, password_of
from tests.ports import free_port

# Display names shown in the softphone; admins and compliance officers are people too.
PEOPLE = {"alice": "Alice Archer", "bob": "Bob Baker", "carol": "Carol Cole"}


def add_people(serve: Serve) -> None:
    """alice, bob, carol (users) and cora (compliance), added by root through the API."""
    status, body = http_json(
        f"{serve.url}/api/login", body={"handle": "root", "password": password_of("root")}
    )
    assert status == 200, body
    token = body["token"]
    people = [(h, n, "user") for h, n in PEOPLE.items()] + [
        ("cora", "Cora Compliance", "compliance")
    ]
    for handle, name, role in people:
        account = {
            "handle": handle,
            "display_name": name,
            "password": password_of(handle),
            "role": role,
        }
        status, body = http_json(f"{serve.url}/api/users", body=account, token=token)
        assert status == 201, body


def sip_env() -> dict[str, str]:
    """A SIP edge with one trunk nobody may dial out through (tests/browser/test_sip_ui.py)."""
    trunk = {"name": "uk", "addresses": ["127.0.0.2"], "outbound": "127.0.0.2:9",
             "routes": ["+44"]}  # fmt: skip
    return {
        "CALLGATE_SIP__LISTEN": f"127.0.0.1:{free_port()}",
        "CALLGATE_SIP__TRUNKS": json.dumps([trunk]),
    }


@pytest.fixture(scope="package")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One `callgate serve` for every browser test (default relay-only ICE policy, short call
    timeouts), with root (admin) made by `callgate user add` and everyone else by root."""
    require_browser()
    root = tmp_path_factory.mktemp("browser-serve")
    template = root / "template"
    template.mkdir()
    add_user(template, "root", role="admin", display_name="Rita Root")
    server = new_serve(root, template=template, **sip_env())
    server.start()
    try:
        add_people(server)
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"callgate serve exited {code} on SIGTERM:\n{server.log()}"
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="package")
def fake_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tone_wav(tmp_path_factory.mktemp("mic") / "tone.wav", FAKE_MIC_HZ, 10.0)


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread
# until it stops, and every asyncio test after the browser tests would then fail to start its own.
@pytest.fixture(scope="package")
def playwright_api() -> Iterator[Any]:
    sync_api = require_browser()
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="package")
def browser(playwright_api: Any, fake_mic: Path) -> Iterator[Any]:
    """Chromium that grants the microphone without asking; the mic plays `fake_mic` in a loop."""
    chromium = playwright_api.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            *CHROMIUM_ARGS,
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic}",
        ],
    )
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="package")
def denying_browser(playwright_api: Any) -> Iterator[Any]:
    """Chromium without the fake permission UI: headless, it refuses every microphone request."""
    chromium = playwright_api.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """A factory of pages, each in its own context (its own sessionStorage: its own user)."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 860) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
