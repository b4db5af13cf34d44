"""`callgate user … --server URL` against a real `callgate serve` subprocess on loopback, with its
store on SQLite and on PostgreSQL (CALLGATE_DATABASE_URL).

The first start prints the admin's one-time password; `callgate login` saves the admin's session
in a temp CALLGATE_CONFIG_DIR, and the user commands go through /api/users with it (or with a
one-shot sign-in: --user ADMIN and CALLGATE_ADMIN_PASSWORD).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.cli_process import run_in_process
from tests.integration.test_cli import free_port, running, stop

pytestmark = pytest.mark.timeout(300)  # many CLI processes, each seconds on a busy machine


@dataclass(frozen=True)
class Server:
    url: str
    database_url: str
    admin_password: str
    cwd: Path


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    data = tmp_path / "data"
    port, http_port = free_port(), free_port()
    args = [
        "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{http_port}",
        "--listen", f"127.0.0.1:{port}",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    env = {"CALLGATE_DATABASE_URL": database_url}
    with running(args, tmp_path, port, ready_url=f"{url}/healthz", **env) as proc:
        log = (tmp_path / "server.log").read_text()
        found = re.search(r"user 'admin', password (\S+) ", log)
        assert found, log
        yield Server(url, database_url, found.group(1), tmp_path)
        assert stop(proc) == 0
    database_password = urlsplit(database_url).password
    assert (
        database_password is None or database_password not in (tmp_path / "server.log").read_text()
    )


def run(
    server: Server, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`callgate ARGS` with the admin's saved session (CALLGATE_CONFIG_DIR=cwd/cfg) unless `env`
    says otherwise."""
    env.setdefault("CALLGATE_CONFIG_DIR", str(server.cwd / "cfg"))
    return run_in_process(*args, cwd=server.cwd, stdin=stdin, **env)


def status_of_login(server: Server, handle: str, password: str) -> int:
    response = httpx.post(
        f"{server.url}/api/login", json={"handle": handle, "password": password}, timeout=30
    )
    return response.status_code


def listed(server: Server, **env: str) -> dict[str, dict[str, object]]:
    result = run(server, "user", "list", "--server", server.url, "--json", **env)
    assert result.returncode == 0, result.stderr
    return {row["handle"]: row for row in map(json.loads, result.stdout.splitlines())}


def test_user_commands_through_the_api(server: Server) -> None:
    url = server.url
    signed_in = run(
        server, "login", "--server", url, "--user", "admin", "--password-stdin",
        stdin=server.admin_password + "\n",
    )  # fmt: skip
    assert signed_in.returncode == 0, signed_in.stderr

    added = run(
        server, "user", "add", "bob", "--server", url, "--password-stdin", stdin="bravo-pass-1\n"
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added user bob (realm callgate)"
    assert status_of_login(server, "bob", "bravo-pass-1") == 200
    again = run(
        server, "user", "add", "bob", "--server", url, "--password-stdin", stdin="another-pass\n"
    )
    assert again.returncode == 1 and "user 'bob' exists" in again.stderr
    bad = run(server, "user", "add", "Bad!", "--server", url, "--password-stdin", stdin="x\n")
    assert bad.returncode == 1 and "handle must be" in bad.stderr

    users = listed(server)
    assert set(users) == {"admin", "bob"}
    assert users["bob"] == {
        "handle": "bob", "display_name": "bob", "groups": [], "admin": False, "role": "user",
        "disabled": False, "kind": "account", "realm": "callgate",
        "created_at": users["bob"]["created_at"],
    }  # fmt: skip
    assert users["admin"]["admin"] is True
    table = run(server, "user", "list", "--server", url)
    assert table.returncode == 0 and "bob" in table.stdout and "enabled" in table.stdout

    disabled = run(server, "user", "disable", "bob", "--server", url)
    assert disabled.returncode == 0 and disabled.stdout.strip() == "disabled bob"
    assert status_of_login(server, "bob", "bravo-pass-1") == 401
    assert listed(server)["bob"]["disabled"] is True
    myself = run(server, "user", "disable", "admin", "--server", url)
    assert myself.returncode == 1 and "cannot disable yourself" in myself.stderr
    enabled = run(server, "user", "enable", "bob", "--server", url)
    assert enabled.returncode == 0 and enabled.stdout.strip() == "enabled bob"
    assert status_of_login(server, "bob", "bravo-pass-1") == 200

    passwd = run(
        server, "user", "passwd", "bob", "--server", url, "--password-stdin", stdin="bravo-pass-2\n"
    )
    assert passwd.returncode == 0, passwd.stderr
    assert status_of_login(server, "bob", "bravo-pass-1") == 401
    assert status_of_login(server, "bob", "bravo-pass-2") == 200
    unknown = run(server, "user", "passwd", "nobody", "--server", url, CALLGATE_PASSWORD="pw")
    assert unknown.returncode == 1 and "no user 'nobody'" in unknown.stderr

    removed = run(server, "user", "remove", "bob", "--server", url)
    assert removed.returncode == 0 and removed.stdout.strip() == "removed user bob"
    assert status_of_login(server, "bob", "bravo-pass-2") == 401
    assert set(listed(server)) == {"admin"}
    gone = run(server, "user", "remove", "bob", "--server", url)
    assert gone.returncode == 1 and "no user 'bob'" in gone.stderr
    myself = run(server, "user", "remove", "admin", "--server", url)
    assert myself.returncode == 1 and "cannot remove yourself" in myself.stderr

    # The server from CALLGATE_SERVER; an explicit --data-dir still means the store itself.
    from_env = run(
        server,
        "user",
        "add",
        "dan",
        "--password-stdin",
        stdin="delta-pass-1\n",
        CALLGATE_SERVER=url,
    )
    assert from_env.returncode == 0, from_env.stderr
    assert status_of_login(server, "dan", "delta-pass-1") == 200
    both = run(server, "user", "list", "--server", url, "--data-dir", str(server.cwd / "data"))
    assert both.returncode == 2 and "--data-dir" in both.stderr


def test_one_shot_admin_sign_in_and_refusals(server: Server) -> None:
    url, empty = server.url, str(server.cwd / "no-session")
    as_admin = {"CALLGATE_CONFIG_DIR": empty, "CALLGATE_ADMIN_PASSWORD": server.admin_password}

    # stdin is carol's new password; the admin's comes from CALLGATE_ADMIN_PASSWORD.
    added = run(
        server, "user", "add", "carol", "--server", url, "--user", "admin", "--password-stdin",
        "--group", "ops", "--display-name", "Carol C", stdin="charlie-pass-1\n", **as_admin,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert status_of_login(server, "carol", "charlie-pass-1") == 200
    assert listed(server, **as_admin, CALLGATE_USER="admin")["carol"]["groups"] == ["ops"]
    # Without a new password to read, --password-stdin is the admin's.
    disabled = run(
        server, "user", "disable", "carol", "--server", url, "--user", "admin",
        "--password-stdin", stdin=server.admin_password + "\n", CALLGATE_CONFIG_DIR=empty,
    )  # fmt: skip
    assert disabled.returncode == 0, disabled.stderr
    assert status_of_login(server, "carol", "charlie-pass-1") == 401
    # The one-shot tokens were revoked when each command ended.
    engine = create_engine(server.database_url)
    with engine.connect() as db:
        open_tokens = db.execute(
            text(
                "SELECT count(*) FROM api_tokens "
                "WHERE device = 'callgate-user' AND revoked_at IS NULL"
            )
        ).scalar_one()
    engine.dispose()
    assert open_tokens == 0

    no_session = run(server, "user", "list", "--server", url, CALLGATE_CONFIG_DIR=empty)
    assert no_session.returncode == 1 and "not signed in" in no_session.stderr
    no_admin_pw = run(
        server, "user", "add", "eve", "--server", url, "--user", "admin", "--password-stdin",
        stdin="pw-e\n", CALLGATE_CONFIG_DIR=empty, CALLGATE_PASSWORD=server.admin_password,
    )  # fmt: skip
    assert no_admin_pw.returncode == 1 and "CALLGATE_ADMIN_PASSWORD" in no_admin_pw.stderr
    wrong = run(
        server, "user", "list", "--server", url, "--user", "admin",
        CALLGATE_CONFIG_DIR=empty, CALLGATE_ADMIN_PASSWORD="wrong",
    )  # fmt: skip
    assert wrong.returncode == 1 and "invalid credentials" in wrong.stderr

    add_dan = run(
        server, "user", "add", "dan", "--server", url, "--user", "admin", stdin="",
        CALLGATE_PASSWORD="delta-pass-1", **as_admin,
    )  # fmt: skip
    assert add_dan.returncode == 0, add_dan.stderr
    not_admin = run(
        server, "user", "list", "--server", url, "--user", "dan", "--password-stdin",
        stdin="delta-pass-1\n", CALLGATE_CONFIG_DIR=empty,
    )  # fmt: skip
    assert not_admin.returncode == 1 and "'dan' is not an administrator" in not_admin.stderr

    unreachable = run(
        server, "user", "list", "--server", "http://127.0.0.1:9", **as_admin, CALLGATE_USER="admin"
    )
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    not_url = run(server, "user", "list", "--server", "ftp://x", **as_admin)
    assert not_url.returncode == 2 and "not an http(s) URL" in not_url.stderr
