"""The store's files are private: data dir 0700, SQLite file (and -wal/-shm) and keys 0600, new
or tightened at start."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from callgate.keys import load_or_create_secret
from callgate.storage.db import open_store, sqlite_url
from callgate.storage.permissions import private_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    private_data_dir(data)
    store = open_store(sqlite_url(data))
    try:
        load_or_create_secret(data, "turn-rest-secret")
        with store.engine.connect():
            files = [p for p in data.rglob("*") if p.is_file()]
            assert any(p.name.endswith("-wal") for p in files)
            assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        store.close()
    assert mode(data) == 0o700 and mode(data / "keys") == 0o700


def test_a_world_readable_store_is_tightened_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    open_store(sqlite_url(data)).close()
    load_or_create_secret(data, "turn-rest-secret")
    db = data / "callgate.sqlite3"
    for path, loose in ((data, 0o755), (data / "keys", 0o755), (db, 0o644)):
        path.chmod(loose)
    (data / "keys" / "turn-rest-secret").chmod(0o644)
    with caplog.at_level(logging.WARNING, "callgate.storage.permissions"):
        private_data_dir(data)
        open_store(sqlite_url(data)).close()
    assert mode(data) == 0o700 and mode(data / "keys") == 0o700
    assert mode(db) == 0o600 and mode(data / "keys" / "turn-rest-secret") == 0o600
    tightened = [r.getMessage() for r in caplog.records]
    assert len(tightened) == 4 and all("tightened permissions" in m for m in tightened)
