"""The admin CLI on a stopped data directory: roles, exports, retention and legal hold."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callgate.cli.app import app
from callgate.records.cdr import CdrRepository
from callgate.storage.db import open_store, sqlite_url
from tests.unit.api.admin_api.seed import seed_records


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = open_store(sqlite_url(tmp_path))
    seed_records(store, CdrRepository(store), calls=3)
    store.close()
    return tmp_path


def run(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_roles(data_dir: Path) -> None:
    where = ("--data-dir", str(data_dir))
    out = run(
        "user",
        "add",
        "dora",
        "--role",
        "compliance",
        "--password-stdin",
        *where,
        stdin="long-password\n",
    )
    assert out.strip() == "added compliance officer dora (realm callgate)"
    assert run("user", "set-role", "dora", "admin", *where).strip() == "dora is now administrator"
    rows = [json.loads(line) for line in run("user", "list", "--json", *where).splitlines()]
    assert [(r["handle"], r["role"], r["admin"]) for r in rows] == [("dora", "admin", True)]
    bad = CliRunner().invoke(app, ["user", "set-role", "nobody", "user", *where])
    assert bad.exit_code == 1 and "no user 'nobody'" in bad.output


def test_exports_are_written_and_audited(data_dir: Path) -> None:
    where = ("--data-dir", str(data_dir))
    out = data_dir / "cdrs.csv"
    run("cdr", "export", "--format", "csv", "--party", "carol", "-o", str(out), *where)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["call_id"] for r in rows] == ["bc0001"]
    lines = run("audit", "export", "--action", "export.cdr", *where).splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["details"]["phase"], e["details"].get("rows")) for e in entries] == [
        ("start", None),
        ("end", 1),
    ]
    assert entries[0]["details"]["filter"] == {"party": "carol"}


def test_retention_purge_keeps_held_calls(data_dir: Path) -> None:
    where = ("--data-dir", str(data_dir))
    run("retention", "set", "--cdr-days", "1", *where)
    assert run("retention", "hold", "--call", "ab0001", *where).strip() == (
        "call ab0001: legal hold on"
    )
    run("user", "add", "carol", "--password-stdin", *where, stdin="long-password\n")
    run("retention", "hold", "--user", "carol", *where)
    out = run("retention", "purge", *where)
    # 3 alice-bob calls + bob-carol + denied: ab0001 (held) and bc0001 (carol held) stay.
    assert out.strip().startswith("deleted 3 call records") and "kept 2 held calls" in out
    assert json.loads(run("retention", "show", *where)) == {
        "cdr": 1,
        "quality": None,
        "audit": None,
    }
