"""Disk full under a running `callgate serve` (SQLite on a small tmpfs this test mounts): the
server fails closed and says so, then recovers by itself when space returns.

While full: `/healthz` answers 503 naming the storage, a relay Allocate is refused with 508 (no
allocation without its `relay_sessions` record), sign-in and logout answer 503 with a clear
message (never 500). After the filler is removed: all of it works again, without a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.stun.attributes import unpack_error_code
from callgate.stun.constants import Attr, MessageClass
from tests.e2e.helpers import (
    LOOPBACK,
    Serve,
    connected,
    http_json,
    login,
    new_serve,
    password_of,
    wait_for,
)
from tests.e2e.small_disk import fill, mounted_tmpfs
from tests.integration.turn_client import error_code, udp_client

pytestmark = pytest.mark.timeout(120)

TMPFS_SIZE = "24m"


def health(serve: Serve) -> tuple[int, dict[str, object]]:
    status, body = http_json(f"{serve.url}/healthz")
    return status, body or {}


async def allocate(serve: Serve, source: str, username: str, password: str) -> object:
    async with udp_client((LOOPBACK, serve.turn_port), source) as client:
        client.username, client.password = username, password
        return await client.allocate()


@pytest.fixture
def full_disk_serve(tmp_path: Path, user_template: Path) -> Iterator[Serve]:
    with mounted_tmpfs(tmp_path / "disk", size=TMPFS_SIZE, mode="0755") as disk:
        server = new_serve(disk, template=user_template)
        server.log_path = tmp_path / "serve.log"  # the log must not need the full disk
        server.start(timeout=60)
        try:
            yield server
        finally:
            code = server.stop()
        assert code == 0, server.log()
        assert "Traceback" not in server.log(), server.log()


async def test_disk_full_fails_closed_and_recovers_by_itself(full_disk_serve: Serve) -> None:
    serve = full_disk_serve
    async with connected(serve, "alice") as alice:
        turn = next(s for s in alice.hello["ice_servers"] if "username" in s)
    token = await login(serve, "bob")
    filler = serve.data_dir.parent / "filler"
    fill(filler)

    def unhealthy() -> dict[str, object] | None:
        status, body = health(serve)
        return body if status == 503 else None

    body = await wait_for(unhealthy, 60.0, "/healthz 503 while the disk is full")
    assert body["storage"] == {"ok": False, "error": "No space left on device"}

    refused = await allocate(serve, "127.0.0.61", turn["username"], turn["credential"])
    assert error_code(refused) == 508  # type: ignore[arg-type]
    reason = unpack_error_code(refused.get(Attr.ERROR_CODE))[1]  # type: ignore[attr-defined]
    assert reason == "Allocation cannot be recorded now (storage full)"

    body_in = {"handle": "carol", "password": password_of("carol")}
    status, answer = http_json(f"{serve.url}/api/login", body=body_in)
    assert status == 503 and "storage unavailable" in answer["detail"]
    status, answer = http_json(f"{serve.url}/api/logout", body={}, token=token)
    assert status == 503 and "nothing was changed" in answer["detail"]

    filler.unlink()
    await wait_for(lambda: health(serve)[0] == 200, 60.0, "/healthz 200 once space is back")
    status, _ = http_json(f"{serve.url}/api/login", body=body_in)
    assert status == 200
    status, _ = http_json(f"{serve.url}/api/logout", body={}, token=token)
    assert status in (200, 204)
    granted = await allocate(serve, "127.0.0.62", turn["username"], turn["credential"])
    assert granted.cls is MessageClass.SUCCESS  # type: ignore[attr-defined]
    assert "storage is writable again" in serve.log()
