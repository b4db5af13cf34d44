"""`callgate audit verify | checkpoint | list` (run in-process, tests/cli_process.py) on a data
dir written by the library."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callgate.records.audit import AuditLog
from callgate.storage.db import open_store, sqlite_url
from tests.cli_process import run_in_process as callgate

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


def seed(data: Path, count: int) -> None:
    store = open_store(sqlite_url(data))
    try:
        log = AuditLog(store)
        for i in range(1, count + 1):
            log.append("admin", "user.add", f"user:u{i}", {"i": i}, at=T0 + timedelta(seconds=i))
    finally:
        store.close()


def test_verify_intact_then_tampered(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed(data, 8)
    ok = callgate("audit", "verify", "--data-dir", str(data), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "8 entries" in ok.stdout

    with sqlite3.connect(data / "callgate.sqlite3") as conn:
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 5")
    bad = callgate("audit", "verify", "--data-dir", str(data), cwd=tmp_path)
    assert bad.returncode == 1
    assert "entry 5" in bad.stderr
    as_json = callgate("audit", "verify", "--json", "--data-dir", str(data), cwd=tmp_path)
    assert as_json.returncode == 1
    result = json.loads(as_json.stdout)
    assert (result["ok"], result["first_bad_seq"], result["size"]) == (False, 5, 4)


def test_checkpoint_export_and_truncation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed(data, 6)
    exported = tmp_path / "checkpoint.txt"
    cp = callgate(
        "audit", "checkpoint", "--export", str(exported), "--data-dir", str(data), cwd=tmp_path
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.startswith("callgate-audit\n6\n")
    assert exported.read_text() == cp.stdout
    assert (data / "keys" / "audit-ed25519.pem").stat().st_mode & 0o777 == 0o600

    ok = callgate("audit", "verify", "--data-dir", str(data), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "1 signed checkpoint" in ok.stdout

    with sqlite3.connect(data / "callgate.sqlite3") as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq > 3")
        conn.execute("DELETE FROM audit_checkpoints")
    assert callgate("audit", "verify", "--data-dir", str(data), cwd=tmp_path).returncode == 0
    bad = callgate(
        "audit", "verify", "--from-checkpoint", str(exported), "--data-dir", str(data), cwd=tmp_path
    )
    assert bad.returncode == 1
    assert "entry 4" in bad.stderr and "truncated" in bad.stderr


def test_list(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed(data, 3)
    listed = callgate(
        "audit", "list", "--limit", "2", "--json", "--data-dir", str(data), cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["seq"], r["object"], r["details"]) for r in rows] == [
        (3, "user:u3", {"i": 3}),
        (2, "user:u2", {"i": 2}),
    ]
    table = callgate("audit", "list", "--data-dir", str(data), cwd=tmp_path)
    assert table.returncode == 0 and "user:u1" in table.stdout
