"""The console's findings long poll (GET /api/findings?after=&wait=) over real sockets: a client
that hangs up frees its hold at once, a user demoted or signed out during the hold gets no
findings, a NaN wait is refused precisely, and a stopping server releases the holds."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI

from callgate.accounts.records import UserRecord
from callgate.api.routes.findings import FindingsFeed, findings_router
from callgate.runtime.monitoring import Monitoring
from tests.ports import free_port

NOW = datetime.now(UTC)
SEC = UserRecord(1, "sec", "Sec", (), "callgate", False, False, True, NOW, NOW, role="security")


class Accounts:
    def __init__(self) -> None:
        self.users: dict[str, UserRecord] = {"t-sec": SEC}

    def verify_token(self, token: str) -> UserRecord | None:
        return self.users.get(token)


class Repository:
    """A findings table holding one finding that must reach only those allowed to see it."""

    def version(self) -> str:
        return "1.1.0.10"

    def recent(self, limit: int, unsanctioned: bool) -> list[Any]:
        return [SimpleNamespace(as_json=lambda: {"host": "10.0.0.1", "peer": "192.0.2.9"})]


class Audit:
    def append(self, *args: object) -> None:
        pass


async def test_hang_ups_demotions_and_nan_waits() -> None:
    accounts = Accounts()
    feed = FindingsFeed(asyncio.get_running_loop(), Repository().version)
    app = FastAPI()
    app.state.services = SimpleNamespace(accounts=accounts)
    app.include_router(findings_router(Repository(), dict, Audit(), feed=feed))  # type: ignore[arg-type]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    poll = "/api/findings?after=1.1.0.10&wait=25"
    headers = {"Authorization": "Bearer t-sec"}

    async def until(condition: Any) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("not within 10 s")

    try:
        # four hung-up clients: each hold ends when its connection closes, not after 25 s
        request = f"GET {poll} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t-sec\r\n\r\n"
        for _ in range(4):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request.encode())
            await writer.drain()
            await until(lambda: feed.waiters == 1)
            writer.close()
            await writer.wait_closed()
            await until(lambda: feed.waiters == 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            # demoted during the hold: refused when the hold ends, nothing in the answer
            held = asyncio.create_task(client.get(poll, headers=headers))
            await until(lambda: feed.waiters == 1)
            accounts.users["t-sec"] = dataclasses.replace(SEC, role="user")
            feed.close()  # end the hold now (as a stop or a new finding would)
            demoted = await held
            assert demoted.status_code == 403 and "192.0.2.9" not in demoted.text
            accounts.users["t-sec"] = SEC
            feed.closed = False
            # signed out during the hold: 401
            held = asyncio.create_task(client.get(poll, headers=headers))
            await until(lambda: feed.waiters == 1)
            del accounts.users["t-sec"]
            feed.close()
            signed_out = await held
            assert signed_out.status_code == 401 and "192.0.2.9" not in signed_out.text
            accounts.users["t-sec"] = SEC
            feed.closed = False
            for bad in ("nan", "inf", "-1", "26"):
                answer = await client.get(f"/api/findings?after=1&wait={bad}", headers=headers)
                assert answer.status_code == 422, bad
                [error] = answer.json()["detail"]
                assert error["loc"] == ["query", "wait"], error
            assert "finite" in (await client.get("/api/findings?after=1&wait=nan",
                                                 headers=headers)).text  # fmt: skip
            ok = await client.get("/api/findings", headers=headers)
            assert ok.status_code == 200 and "192.0.2.9" in ok.text
            # the server stops as `serve` does: holds released first, then uvicorn told to
            # exit, which waits for requests under way (a hold would keep it 25 s)
            held = asyncio.create_task(client.get(poll, headers=headers))
            await until(lambda: feed.waiters == 1)
            Monitoring(None, APIRouter(), None, None, feed).release_polls()
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            assert (await held).status_code == 200
    finally:
        server.should_exit = True
        await task
