"""`callgate login --sso`: the device authorization grant (RFC 8628) end to end, with panva's
oidc-provider (an OpenID provider nobody here wrote; tests/identity/node_idp.py) on loopback,
`callgate serve` configured for it, and the real CLI as a subprocess; the person approves at
the provider's own pages (driven by httpx, as a browser would)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table

from callgate.storage.models import AuditEntry
from tests.cli_process import COMMAND, clean_env
from tests.e2e.helpers import Serve, http_json, rows_of
from tests.identity.node_idp import DEVICE_GRANT, approve, node_idp
from tests.identity.oidc_support import CLIENT_ID, CLIENT_SECRET, sso_serve

AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
CLIENT = {
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "grant_types": [DEVICE_GRANT],
    "response_types": [],
    "redirect_uris": [],
    "token_endpoint_auth_method": "client_secret_basic",
}
PEOPLE = {
    "u-erin": {"preferred_username": "erin", "name": "Erin Diaz", "email": "erin@example.com",
               "groups": ["voice-admins", "Sales"]},
}  # fmt: skip


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("sso-device")
    with node_idp(root / "idp.log", CLIENT, PEOPLE) as issuer, sso_serve(root, issuer) as server:
        yield server


def audit(serve: Serve, action: str) -> list[dict[str, Any]]:
    rows = rows_of(serve.database, AUDIT, AUDIT.c.action == action, order=("seq",))
    return [{**row, "details": json.loads(row["details"] or "{}")} for row in rows]


async def read_code(stderr: asyncio.StreamReader) -> tuple[str, str, list[str]]:
    """(verification URI, user code) from what `callgate login --sso` tells the person."""
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(stderr.readline(), 30)).decode()
        assert line, f"stderr closed; saw {lines}"
        lines.append(line)
        found = re.search(r"open (\S+) in a browser and enter the code (\S+) ", line)
        if found:
            return found.group(1), found.group(2), lines


async def test_login_sso_signs_in_after_approval_in_the_browser(serve: Serve, tmp: Path) -> None:
    config = tmp / "cli-config"
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "login", "--sso", "--server", serve.url,
        env=clean_env(CALLGATE_CONFIG_DIR=str(config)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        uri, code, _ = await read_code(process.stderr)
        page = await asyncio.to_thread(approve, uri, code, "u-erin")
        assert "Sign-in Success" in page
        _out, rest = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, rest.decode()
    assert "signed in as erin" in rest.decode()
    session = json.loads((config / "session.json").read_text())
    assert (config / "session.json").stat().st_mode & 0o077 == 0
    status, me = http_json(f"{serve.url}/api/me", token=session["token"])
    assert status == 200
    assert (me["handle"], me["role"], me["groups"], me["source"]) == (
        "erin", "admin", ["sales"], "oidc",
    )  # fmt: skip
    login = [e for e in audit(serve, "auth.login") if e["actor"] == "erin"][-1]["details"]
    assert (login["method"], login["grant"], login["device"]) == ("oidc", "device_code", "cli-sso")
    assert login["subject"] == "u-erin"


def test_denied_early_and_replayed_polls_are_refused(serve: Serve) -> None:
    status, started = http_json(f"{serve.url}/api/sso/device", body={})
    assert status == 200, started
    assert set(started) >= {"attempt", "user_code", "verification_uri", "expires_in", "interval"}
    assert "device_code" not in started  # it never leaves the server
    poll = {"attempt": started["attempt"]}
    # Asked before the interval: the provider is not asked, the client is told to slow down.
    status, early = http_json(f"{serve.url}/api/sso/device/token", body=poll)
    assert (status, early["error"]) == (400, "slow_down")
    assert "Sign-in Success" not in approve(
        started["verification_uri"], started["user_code"], "u-erin", consent=False
    )
    denied = _poll_until_done(serve, poll, started["interval"])
    assert denied == (403, {"error": "access_denied",
                            "detail": "the provider answered 'access_denied'"})  # fmt: skip
    status, again = http_json(f"{serve.url}/api/sso/device/token", body=poll)
    assert status == 400
    assert again["detail"] == "unknown, expired or already used sign-in (device)"
    status, forged = http_json(f"{serve.url}/api/sso/device/token", body={"attempt": "x" * 43})
    assert (status, forged["error"]) == (400, "access_denied")
    reasons = [e["details"]["reason"] for e in audit(serve, "auth.login_failed")]
    assert "the provider answered 'access_denied'" in reasons
    assert http_json(f"{serve.url}/api/sso/device/token", body={"attempt": ""})[0] == 422


def _poll_until_done(serve: Serve, poll: dict[str, str], interval: int) -> tuple[int, Any]:
    import time

    for _ in range(30):  # generous: a loaded machine's provider answers late
        time.sleep(interval + 0.5)
        status, body = http_json(f"{serve.url}/api/sso/device/token", body=poll)
        if body.get("error") not in ("authorization_pending", "slow_down"):
            return status, body
    raise AssertionError("the sign-in never finished")
