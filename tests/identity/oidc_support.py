"""Single sign-on test support: `callgate serve` configured for an OpenID provider on loopback
(tests/identity/test_oidc_serve.py, tests/browser/test_sso.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
from oidc_provider_mock import User
from sqlalchemy import Table

from callgate.storage.models import AuditEntry
from tests.e2e.helpers import Serve, callgate, free_port, private_relay_range, rows_of

AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]

CLIENT_ID = "callgate-e2e"
CLIENT_SECRET = "client-secret-e2e"
PEOPLE = [
    User(sub="sub-carol", claims={
        "preferred_username": "carol", "name": "Carol Jones", "email": "carol@example.com",
        "groups": ["voice-admins", "Sales", "printers"],
    }),
    User(sub="sub-dan", claims={"preferred_username": "Dan Space", "name": "Dan"}),
    User(sub="sub-bob", claims={"preferred_username": "bob", "name": "Impostor Bob"}),
]  # fmt: skip


@contextlib.contextmanager
def sso_serve(root: Path, issuer: str, **more_env: str) -> Iterator[Serve]:
    """A running server with a local `bob` and single sign-on with `issuer` ("Example Corp"),
    `more_env` added to its environment; checks at the end that it stopped cleanly and logged
    no secret (nor any value of `more_env` ending in TOKEN)."""
    data_dir = root / "data"
    data_dir.mkdir()
    added = callgate(
        "user",
        "add",
        "bob",
        "--data-dir",
        str(data_dir),
        "--password-stdin",
        stdin="local-sesame-42\n",
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    env = {
        "ENABLED": "true",
        "ISSUER": issuer,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URL": f"http://127.0.0.1:{port}/api/sso/callback",
        "LABEL": "Example Corp",
        "GROUP_MAP": json.dumps({"sales": ["sales"]}),
        "ROLE_MAP": json.dumps({"voice-admins": "admin"}),
    }
    server = Serve(
        data_dir=data_dir,
        http_port=port,
        turn_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=root / "serve.log",
        env={**{f"CALLGATE_IDENTITY__OIDC__{k}": v for k, v in env.items()}, **more_env},
    ).start()
    try:
        yield server
    finally:
        code = server.stop()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert CLIENT_SECRET not in log
    secrets = [v for k, v in more_env.items() if k.endswith("TOKEN")]
    assert not [s for s in secrets if s in log]
    every_entry = json.dumps([str(row) for row in rows_of(server.database, AUDIT)])
    assert "config.start" in every_entry and CLIENT_SECRET not in every_entry
    assert not [s for s in secrets if s in every_entry]
    assert "sso_token=" not in log


def start(client: httpx.Client, serve: Serve, next_path: str = "/console") -> str:
    """GET /api/sso/login: the provider's authorization URL (the state cookie is now set)."""
    response = client.get(f"{serve.url}/api/sso/login", params={"next": next_path})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def consent(client: httpx.Client, authorize_url: str, sub: str) -> str:
    """The person picks `sub` on the provider's form: the callback URL it redirects to."""
    form = client.get(authorize_url)
    assert form.status_code == 200 and "sub" in form.text
    response = client.post(authorize_url, data={"sub": sub})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def finish(client: httpx.Client, callback_url: str) -> dict[str, str]:
    """Follow the callback: the fragment of where callgate sends the browser."""
    response = client.get(callback_url)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    path, _, fragment = location.partition("#")
    key, _, value = fragment.partition("=")
    return {"path": path, key: unquote(value)}
