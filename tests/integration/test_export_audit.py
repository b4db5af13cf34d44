"""An export cut off by the client is audited as it happened (issue 12 item 12): the end entry
says `complete: false` with the rows and bytes that reached the connection, and is written when
the client goes away, not when the abandoned stream is collected a minute later."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.records.audit import AuditLog
from callgate.storage.db import open_store, sqlite_url
from tests.integration.serve_fixture import WebServer, serve

pytestmark = pytest.mark.timeout(180)
ENTRIES = 60_000  # about 40 MB of JSON Lines: far more than the socket buffers hold


def fill_audit_log(data: Path) -> None:
    store = open_store(sqlite_url(data))
    try:
        padding = "x" * 500
        AuditLog(store).append_many(
            [("system", "test.filler", f"n:{i}", {"i": i, "pad": padding}) for i in range(ENTRIES)]
        )
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    yield from serve(tmp_path_factory.mktemp("export"), prepare=fill_audit_log)


def export_entries(server: WebServer, headers: dict[str, str]) -> list[dict[str, Any]]:
    with server.client() as client:
        page = client.get(
            "/api/audit/entries", params={"action": "export.audit", "limit": 100}, headers=headers
        )
    assert page.status_code == 200, page.text
    return [entry["details"] for entry in page.json()["items"]]


def test_an_export_cut_off_by_the_client_is_logged_incomplete_at_once(server: WebServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('admin')}"}
    received = 0
    with server.client() as client:
        params = {"format": "jsonl", "action": "test.filler"}
        with client.stream("GET", "/api/audit/export", params=params, headers=headers) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_raw():
                received += len(chunk)
                if received > 100_000:
                    break  # the client goes away mid-export
    deadline = time.monotonic() + 30  # generous; the stream used to linger for 80 s
    ends: list[dict[str, Any]] = []
    while not ends and time.monotonic() < deadline:
        ends = [d for d in export_entries(server, headers) if d["phase"] == "end"]
        time.sleep(0.2)
    assert len(ends) == 1, "no export.audit end entry within 30 s of the disconnect"
    (end,) = ends
    assert end["complete"] is False
    assert 0 < end["rows"] < ENTRIES
    assert received <= end["bytes"] < ENTRIES * 500


def test_a_complete_export_is_logged_complete(server: WebServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('admin')}"}
    with server.client() as client:
        params = {"format": "jsonl", "action": "test.filler", "until": "2000-01-01T00:00:00Z"}
        answer = client.get("/api/audit/export", params=params, headers=headers)
    assert answer.status_code == 200 and answer.content == b""
    ends = [d for d in export_entries(server, headers) if d["phase"] == "end"]
    assert {"rows": 0, "bytes": 0, "complete": True}.items() <= ends[-1].items()
