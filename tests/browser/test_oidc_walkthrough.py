"""docs/identity.md "Connect to an OpenID provider on one machine", step by step as written there
(with this test's own folder and ports; `npm ci` is scripts/test's): oidc-provider-mock started
with the documented command, the documented callgate.toml, `callgate serve --config`, and
Chromium signing carol in through the mock's page; then panva's oidc-provider started with the
documented command on the same port, callgate started again, and the documented
`callgate login --sso` approved at the provider's own pages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli_process import clean_env
from tests.doc_steps import REPO, run_step, shell_blocks
from tests.e2e.helpers import Serve, free_port, http_json, private_relay_range
from tests.identity.node_idp import approve, need_node_idp
from tests.identity.test_sso_device import read_code

HEADING = "## Connect to an OpenID provider on one machine"
SERVE_COMMAND = ".venv/bin/callgate serve --config /tmp/oidc/callgate.toml\n"
NPM_CI = "npm ci --prefix tests/identity/idp --no-audit --no-fund\n"  # as scripts/test


@pytest.fixture
def background() -> Iterator[Callable[[str, Path], subprocess.Popen[bytes]]]:
    """Start a documented foreground command (bash, from the checkout) in its own process
    group; `stop` (or the end of the test) ends the group."""
    started: list[subprocess.Popen[bytes]] = []

    def start(step: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["bash", "-c", step], cwd=REPO, stdout=out, stderr=out, start_new_session=True
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {log.read_text()}")


def serve(folder: Path, port: int, log: Path) -> Serve:
    return Serve(
        data_dir=folder / "data",
        http_port=port,
        turn_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=log,
        env={"CALLGATE_CONFIG": str(folder / "callgate.toml")},
    ).start()


def stopped_cleanly(server: Serve) -> None:
    code = server.stop()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log and "any-secret" not in log, log


async def login_sso(step: str, url: str, config_dir: Path) -> tuple[int, str]:
    """The documented `callgate login --sso`, approved as u-1 at the provider's pages."""
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", step, cwd=REPO,
        env=clean_env(CALLGATE_CONFIG_DIR=str(config_dir), CALLGATE_SERVER=url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        uri, code, _ = await read_code(process.stderr)
        page = await asyncio.to_thread(approve, uri, code, "u-1")
        assert "Sign-in Success" in page
        _out, rest = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, rest.decode()


def test_the_oidc_walkthrough_signs_carol_in_from_the_browser_and_the_cli(
    tmp_path: Path, background: Callable[[str, Path], subprocess.Popen[bytes]], new_page: Any
) -> None:
    need_node_idp()
    steps = shell_blocks("docs/identity.md", HEADING)
    assert len(steps) == 6, steps
    mock, configure, serve_step, npm_ci, node_provider, cli = steps
    assert serve_step == SERVE_COMMAND and npm_ci == NPM_CI, steps
    folder = tmp_path / "oidc"
    provider_port, port = free_port(), free_port()

    def local(step: str) -> str:
        return (
            step.replace("/tmp/oidc", str(folder))
            .replace("--port 9400", f"--port {provider_port}")
            .replace("idp.mjs 9400", f"idp.mjs {provider_port}")
            .replace("127.0.0.1:9400", f"127.0.0.1:{provider_port}")
            .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        )

    discovery = f"http://127.0.0.1:{provider_port}/.well-known/openid-configuration"
    mock_log = tmp_path / "mock.log"
    provider = background(local(mock), mock_log)  # 1
    wait_for(discovery, provider, mock_log)
    run_step(local(configure))  # 2
    assert (folder / "callgate.toml").stat().st_mode & 0o077 == 0
    (folder / "data").mkdir()
    server = serve(folder, port, tmp_path / "serve.log")  # 3
    try:
        page = new_page()  # 4
        page.goto(f"{server.url}/")
        page.get_by_role("link", name="Sign in with Example Corp").click()
        page.locator("input[name=sub]").fill("u-1")
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(f"{server.url}/")
        page.locator("#phone").wait_for(state="visible")
        token = page.evaluate("sessionStorage.getItem('callgate.token')")
        status, me = http_json(f"{server.url}/api/me", token=token)
        assert status == 200, me
        assert (me["handle"], me["display_name"], me["role"], me["source"]) == (
            "carol", "Carol Jones", "admin", "oidc",
        )  # fmt: skip
    finally:
        stopped_cleanly(server)
    stop(provider)  # 5: the mock stopped, panva's provider on the same port
    node_log = tmp_path / "node.log"
    provider = background(local(node_provider), node_log)
    wait_for(discovery, provider, node_log)
    server = serve(folder, port, tmp_path / "serve-again.log")  # 6
    try:
        config_dir = tmp_path / "cli"
        # Playwright's sync API runs an event loop in this thread: the CLI's in another one.
        with ThreadPoolExecutor(1) as other:
            done = other.submit(asyncio.run, login_sso(local(cli), server.url, config_dir))
            code, said = done.result(timeout=180)
        assert code == 0 and "signed in as carol" in said, said
        session = json.loads((config_dir / "session.json").read_text())
        status, me = http_json(f"{server.url}/api/me", token=session["token"])
        assert (status, me["handle"], me["role"]) == (200, "carol", "admin")
    finally:
        stopped_cleanly(server)
