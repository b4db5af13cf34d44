"""`callgate serve` on PostgreSQL given by `--database-url`, and a database it cannot reach."""

from __future__ import annotations

import json
from pathlib import Path

from tests.db_backends import PgServer
from tests.integration.test_cli import callgate, free_port, http_get, running, stop


def test_serve_runs_on_postgresql_from_the_option_and_never_logs_the_password(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = pg_server.new_database()
    port, http_port = free_port(), free_port()
    args = [
        "serve", "--data-dir", str(tmp_path / "data"), "--database-url", url,
        "--http", f"127.0.0.1:{http_port}", "--listen", f"127.0.0.1:{port}",
    ]  # fmt: skip
    health = f"http://127.0.0.1:{http_port}/healthz"
    with running(args, tmp_path, port, ready_url=health) as proc:
        status, body = http_get(health)
        assert status == 200 and json.loads(body)["database"] == {"ok": True}
        assert stop(proc) == 0
    log = (tmp_path / "server.log").read_text()
    assert "created the first administrator" in log  # the accounts live in PostgreSQL
    masked = url.replace(pg_server.password, "***")
    assert f"store {masked} open and migrated" in log
    assert pg_server.password not in log
    # The admin is in the PostgreSQL database, not in a SQLite file in the data dir.
    listed = callgate("user", "list", "--json", cwd=tmp_path, CALLGATE_DATABASE_URL=url)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["handle"] for line in listed.stdout.splitlines()] == ["admin"]
    assert not (tmp_path / "data" / "callgate.sqlite3").exists()


def test_serve_with_an_unreachable_database_exits_1_with_the_reason(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://callgate:pw-not-shown@127.0.0.1:{closed}/callgate"
    result = callgate(
        "serve", "--data-dir", str(tmp_path / "data"), "--http", f"127.0.0.1:{free_port()}",
        "--listen", f"127.0.0.1:{free_port()}", cwd=tmp_path, CALLGATE_DATABASE_URL=url,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "could not open or migrate the database "
        f"postgresql+psycopg://callgate:***@127.0.0.1:{closed}/callgate" in result.stderr
    ), result.stderr
    assert "Connection refused" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "pw-not-shown" not in result.stderr + result.stdout
