"""docs/identity.md "Connect to OpenLDAP on one machine", step by step as written there (with this
test's own folder and ports; the apt-get step is scripts/test's): the test CA and Debian's slapd
with the documented entries, the documented callgate.toml, `callgate serve --config`, alice's
sign-in with curl (account made, nested group mapped to admin), then the leaver step: after the
documented ldapmodify her token is refused, her account shows disabled and her password no
longer signs her in."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doc_steps import run_step, shell_blocks
from tests.e2e.helpers import Serve, free_port, http_json, private_relay_range
from tests.identity.conftest import _need_slapd

HEADING = "## Connect to OpenLDAP on one machine"
SERVE_COMMAND = ".venv/bin/callgate serve --config /tmp/ldap/callgate.toml\n"


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """/tmp/ldap of the walkthrough; the slapd it starts (daemonised, pidfile) stopped after."""
    folder = tmp_path / "ldap"
    yield folder
    pidfile = folder / "slapd.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def test_the_ldap_walkthrough_signs_alice_in_and_sees_her_go(folder: Path, tmp_path: Path) -> None:
    _need_slapd()
    steps = shell_blocks("docs/identity.md", HEADING)
    assert len(steps) == 6, steps
    install, directory, configure, serve, sign_in, leaver = steps
    assert install == "apt-get install -y slapd ldap-utils\n"  # scripts/test's apt_needs
    assert serve == SERVE_COMMAND, serve
    ldap_port, port = free_port(), free_port()

    def local(step: str) -> str:
        return (
            step.replace("/tmp/ldap", str(folder))
            .replace("127.0.0.1:6636", f"127.0.0.1:{ldap_port}")
            .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        )

    run_step(local(directory))  # 2: CA, slapd.conf, entries, slapd on LDAPS
    run_step(local(configure))  # 3: callgate.toml
    assert (folder / "callgate.toml").stat().st_mode & 0o077 == 0
    (folder / "data").mkdir()
    server = Serve(
        data_dir=folder / "data",
        http_port=port,
        turn_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=tmp_path / "serve.log",
        # The leaver check every second instead of 30 s, so the test need not wait.
        env={
            "CALLGATE_CONFIG": str(folder / "callgate.toml"),
            "CALLGATE_IDENTITY__LDAP__CHECK_INTERVAL_S": "1",
        },
    ).start()  # 4
    try:
        answer = json.loads(run_step(local(sign_in)))  # 5: alice's directory password
        user = answer["user"]
        assert (user["handle"], user["source"], user["role"], user["groups"]) == (
            "alice", "ldap", "admin", ["it"],
        )  # fmt: skip
        token = answer["token"]
        assert http_json(f"{server.url}/api/me", token=token)[0] == 200

        run_step(local(leaver))  # 6: disabled in the directory
        deadline = time.monotonic() + 60
        while http_json(f"{server.url}/api/me", token=token)[0] != 401:
            assert time.monotonic() < deadline, "her token still works"
            time.sleep(0.5)
        shown = run_step(f".venv/bin/callgate user list --config {folder}/callgate.toml")
        alice = [line.split() for line in shown.splitlines() if line.split()[:1] == ["alice"]]
        assert alice and "disabled" in alice[0], shown
        again = http_json(
            f"{server.url}/api/login", body={"handle": "alice", "password": "alice-secret"}
        )
        assert again[0] == 401, again
    finally:
        code = server.stop()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "alice-secret" not in log and "svc-secret" not in log
