"""docs/identity.md "Connect to a SAML IdP on one machine", step by step as written there (with
this test's own folder and ports): keys made with openssl, the HTTP IdP started
(tests/identity/saml_test_idp.py: pysaml2's IdP role), metadata exchanged both ways with curl,
`callgate serve --config` with the documented [identity.saml] section; then Chromium clicks
"Sign in with Example Corp", signs in on the IdP's own page and is carried back by its
auto-submitting form (real HTTP-Redirect and HTTP-POST bindings) into the softphone, and the
documented CLI commands show the account and the audited sign-in."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.doc_steps import REPO, run_step, shell_blocks
from tests.e2e.helpers import Serve, free_port, http_json, private_relay_range
from tests.identity.saml_idp import need_xmlsec

HEADING = "## Connect to a SAML IdP on one machine"
IDP_COMMAND = ".venv/bin/python tests/identity/saml_test_idp.py "
SERVE_COMMAND = ".venv/bin/callgate serve --config /tmp/saml/callgate.toml\n"


def localised(folder: Path, idp_port: int, port: int) -> Callable[[str], str]:
    def apply(step: str) -> str:
        return (
            step.replace("/tmp/saml", str(folder))
            .replace("--port 9500", f"--port {idp_port}")
            .replace("127.0.0.1:9500", f"127.0.0.1:{idp_port}")
            .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        )

    return apply


@pytest.fixture
def idp_process(tmp_path: Path) -> Iterator[Callable[[str, Path], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(command: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(shlex.split(command), cwd=REPO, stdout=out, stderr=out)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
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


def test_the_saml_walkthrough_signs_carol_in_with_chromium(
    tmp_path: Path, idp_process: Callable[[str, Path], Any], new_page: Any
) -> None:
    need_xmlsec()
    steps = shell_blocks("docs/identity.md", HEADING)
    assert len(steps) == 6, steps
    keys, idp, configure, serve, give_metadata, check = steps
    assert idp.startswith(IDP_COMMAND) and "\n" not in idp.strip(), idp
    assert serve == SERVE_COMMAND, serve
    folder = tmp_path / "saml"
    idp_port, port = free_port(), free_port()
    local = localised(folder, idp_port, port)

    run_step(local(keys))  # 1: openssl key and certificate, people.json
    assert (folder / "idp.key").stat().st_mode & 0o077 == 0
    idp_log = tmp_path / "idp.log"
    proc = idp_process(local(idp), idp_log)  # 2: the IdP, over HTTP
    wait_for(f"http://127.0.0.1:{idp_port}/metadata", proc, idp_log)
    run_step(local(configure))  # 3: its metadata saved, callgate.toml written
    server = Serve(
        data_dir=folder / "data",
        http_port=port,
        turn_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=tmp_path / "serve.log",
        env={"CALLGATE_CONFIG": str(folder / "callgate.toml")},
    )
    (folder / "data").mkdir()
    server.start()  # 4: `callgate serve --config callgate.toml` (our ports on the command line)
    try:
        # Before step 5 the IdP does not know callgate and refuses, as the walkthrough says.
        with httpx.Client(timeout=30) as browser:
            to_idp = browser.get(f"{server.url}/api/saml/login").headers["location"]
            early = browser.get(to_idp)
        assert early.status_code == 400 and "no SP metadata yet" in early.text
        run_step(local(give_metadata))  # 5: callgate's metadata to the IdP

        page = new_page()  # 6: the browser, through the IdP's own page and form
        page.goto(f"{server.url}/")
        page.get_by_role("link", name="Sign in with Example Corp").click()
        page.wait_for_url(f"http://127.0.0.1:{idp_port}/sso?**")
        assert f"Sign in to {server.url}/api/saml/metadata" in page.inner_text("body")
        page.get_by_label("User").fill("carol")
        page.get_by_label("Password").fill("carol-secret")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.url}/")
        page.locator("#phone").wait_for(state="visible")
        assert "sso_token" not in page.url
        token = page.evaluate("sessionStorage.getItem('callgate.token')")
        status, me = http_json(f"{server.url}/api/me", token=token)
        assert status == 200, me
        assert (me["handle"], me["display_name"], me["role"], me["source"]) == (
            "carol", "Carol Jones", "admin", "saml",
        )  # fmt: skip

        shown = run_step(local(check))  # the account and the audited sign-in, from the CLI
        rows = [line.split(maxsplit=5) for line in shown.splitlines()]
        assert ["carol", "Carol", "Jones", "admin", "enabled"] in [r[:5] for r in rows], shown
        created = [r for r in rows if r[3:5] == ["identity:saml", "user.create"]]
        assert created and '"source":"saml"' in created[0][5], shown
        logins = [r for r in rows if r[3:5] == ["carol", "auth.login"]]
        assert logins and '"method":"saml"' in logins[0][5], shown
    finally:
        code = server.stop()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "carol-secret" not in log and "carol-secret" not in idp_log.read_text()
