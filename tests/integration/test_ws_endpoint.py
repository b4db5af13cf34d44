"""`/ws` over a real WebSocket on loopback: token checks at connect and while connected, error
replies that keep the connection usable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from fastapi import FastAPI

from callgate.accounts.records import UserRecord
from callgate.api.ws import WsSettings, signaling_router
from callgate.clock import SystemClock
from callgate.records.cdr import CdrRepository
from callgate.records.quality_store import QualityRepository
from callgate.signaling.engine import CallEngine
from callgate.signaling.hub import SignalingHub
from callgate.signaling.iceconfig import IceServerConfig
from callgate.storage.db import open_store, sqlite_url
from tests.ports import free_port

NOW = datetime.now(UTC)
ALICE = UserRecord(1, "alice", "Alice", (), "callgate", False, False, True, NOW, NOW)


@pytest.fixture
def valid() -> set[str]:
    return {"good-token", "other-token"}


@pytest.fixture
async def url(tmp_path: Path, valid: set[str]) -> AsyncIterator[str]:
    store = open_store(sqlite_url(tmp_path / "data"))
    clock = SystemClock()
    hub = SignalingHub(
        CallEngine(clock), CdrRepository(store), QualityRepository(store.sessions), clock
    )
    settings = WsSettings(
        verify_token=lambda token: ALICE if token in valid else None,
        valid_tokens=lambda tokens: set(tokens) & valid,
        user_exists=lambda handle: handle == "alice",
        relay_only=lambda user: True,
        ice=IceServerConfig(udp=(("127.0.0.1", 3478),), secret="s3cr3t"),
        clock=clock,
        revalidate_seconds=0.2,
    )
    app = FastAPI()
    app.include_router(signaling_router(hub, settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    await hub.start()
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"ws://127.0.0.1:{port}/ws"
    server.should_exit = True
    await task
    await hub.stop()
    store.close()


async def receive(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 30))  # type: ignore[no-any-return]


async def test_a_bad_token_is_closed_with_4401_before_any_message(url: str) -> None:
    async with websockets.connect(f"{url}?token=forged") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_hello_then_errors_keep_the_connection_usable(url: str) -> None:
    async with websockets.connect(f"{url}?token=good-token&device=test") as ws:
        hello = await receive(ws)
        assert hello["type"] == "hello" and hello["ice_transport_policy"] == "relay"
        assert hello["ice_servers"][1]["username"].endswith(":alice")
        await ws.send("{not json")
        assert (await receive(ws))["code"] == "bad-json"
        await ws.send(json.dumps({"type": "call.fly", "id": "1"}))
        error = await receive(ws)
        assert (error["type"], error["id"], error["code"]) == ("error", "1", "unknown-type")
        await ws.send(json.dumps({"type": "ping", "id": "2"}))
        reply = await receive(ws)
        assert (reply["type"], reply["id"]) == ("ack", "2")


async def test_a_socket_is_closed_once_its_token_is_revoked(url: str, valid: set[str]) -> None:
    async with websockets.connect(f"{url}?token=good-token") as ws:
        assert (await receive(ws))["type"] == "hello"
        valid.clear()  # revoked, expired or the account disabled
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_only_the_socket_whose_token_was_revoked_is_closed(url: str, valid: set[str]) -> None:
    async with (
        websockets.connect(f"{url}?token=good-token&device=a") as revoked,
        websockets.connect(f"{url}?token=other-token&device=b") as kept,
    ):
        assert (await receive(revoked))["type"] == "hello"
        assert (await receive(kept))["type"] == "hello"
        valid.discard("good-token")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(revoked)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        await asyncio.sleep(0.5)  # more than two checks of the other socket
        await kept.send(json.dumps({"type": "ping", "id": "1"}))
        assert (await receive(kept))["type"] == "ack"
