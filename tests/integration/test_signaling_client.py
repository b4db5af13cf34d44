"""SignalingClient against a small stand-in server (Starlette under uvicorn on loopback).

The stand-in speaks docs/signaling.md's envelope: POST /api/login, /ws with hello first, ack/error
by id, server events without id, close 4401 for a bad token.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callgate.client.errors import LoginError, SignalingError
from callgate.client.signaling import SignalingClient
from tests.ports import free_port

TOKEN = "tok-alice"
HELLO = {
    "type": "hello",
    "protocol": 1,
    "user": {"handle": "alice", "display_name": "Alice"},
    "device_id": "d1",
    "ice_servers": [],
    "ice_transport_policy": "relay",
}


async def login(request: Request) -> JSONResponse:
    body = await request.json()
    if body != {"handle": "alice", "password": "pw"}:
        return JSONResponse({"detail": "invalid credentials"}, status_code=401)
    return JSONResponse(
        {
            "token": TOKEN,
            "expires_at": "2026-12-01T00:00:00Z",
            "user": {"handle": "alice", "display_name": "Alice", "groups": [], "is_admin": False},
        }
    )


async def ws(socket_: WebSocket) -> None:
    await socket_.accept()
    if socket_.query_params.get("token") != TOKEN:
        await socket_.close(code=4401)
        return
    socket_.app.state.devices.append(socket_.query_params.get("device"))
    await socket_.send_json({**HELLO})
    try:
        while True:
            message: dict[str, Any] = await socket_.receive_json()
            kind, mid = message["type"], message.get("id")
            socket_.app.state.received.append(message)
            if kind == "call.invite":
                # an event that overtakes the ack must still reach the event queue
                await socket_.send_json({"type": "call.ringing", "call_id": "c1", "devices": 2})
                await socket_.send_json({"type": "ack", "id": mid, "call_id": "c1"})
            elif kind == "call.hangup":
                await socket_.send_json(
                    {"type": "error", "id": mid, "code": "not-found", "message": "no such call"}
                )
            elif kind == "slow":
                pass  # never answered
            elif kind == "bye":
                await socket_.send_json({"type": "ack", "id": mid})
                await socket_.close(code=1000)
                return
            else:
                await socket_.send_json({"type": "ack", "id": mid})
    except WebSocketDisconnect:
        return


@contextlib.asynccontextmanager
async def run_server() -> AsyncIterator[tuple[str, Starlette]]:
    app = Starlette(
        routes=[Route("/api/login", login, methods=["POST"]), WebSocketRoute("/ws", ws)]
    )
    app.state.received = []
    app.state.devices = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Starlette]]:
    async with run_server() as running:
        yield running


@pytest.mark.timeout(60)  # a safety net; a loaded machine is slow
async def test_login_connect_request_events(server: tuple[str, Starlette]) -> None:
    url, app = server
    session = await SignalingClient.login(url, "alice", "pw")
    assert (session.token, session.handle, session.server_url) == (TOKEN, "alice", url)
    assert session.user["display_name"] == "Alice"

    client = await SignalingClient.connect(url, session.token, "laptop")
    try:
        assert client.hello == HELLO
        assert app.state.devices == ["laptop"]
        ack = await client.request("call.invite", to="bob", sdp="v=0")
        assert ack["call_id"] == "c1" and ack["type"] == "ack"
        event = await client.next_event(timeout=20)
        assert event == {"type": "call.ringing", "call_id": "c1", "devices": 2}
        with pytest.raises(SignalingError) as refused:
            await client.request("call.hangup", call_id="c9")
        assert (refused.value.code, refused.value.message) == ("not-found", "no such call")
        with pytest.raises(SignalingError) as slow:
            await client.request("slow", timeout=0.2)
        assert slow.value.code == "timeout"
        assert (await client.request("ping"))["type"] == "ack"  # still usable
        ids = [m["id"] for m in app.state.received]
        assert len(set(ids)) == len(ids)
    finally:
        await client.close()
    assert client.closed


@pytest.mark.timeout(60)  # a safety net; a loaded machine is slow
async def test_server_close_ends_events_and_fails_requests(server: tuple[str, Starlette]) -> None:
    url, _ = server
    client = await SignalingClient.connect(url, TOKEN)
    await client.request("bye")
    with pytest.raises(SignalingError) as ended:
        await client.next_event(timeout=20)
    assert ended.value.code == "closed"
    assert [e async for e in client.events()] == []
    with pytest.raises(SignalingError):
        await client.request("ping")
    await client.close()


@pytest.mark.timeout(60)  # a safety net; a loaded machine is slow
async def test_keepalive_pings(server: tuple[str, Starlette]) -> None:
    url, app = server
    client = await SignalingClient.connect(url, TOKEN, ping_interval=0.05)

    def pings() -> int:
        return sum(m["type"] == "ping" for m in app.state.received)

    try:
        # Wait on the outcome, not on a fixed sleep: a loaded CI machine may
        # run the ping loop late, but it must still ping on its own.
        deadline = asyncio.get_running_loop().time() + 10
        while pings() < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    assert pings() >= 2


@pytest.mark.timeout(60)  # a safety net; a loaded machine is slow
async def test_bad_password_and_bad_token(server: tuple[str, Starlette]) -> None:
    url, _ = server
    with pytest.raises(LoginError, match="invalid credentials"):
        await SignalingClient.login(url, "alice", "wrong")
    with pytest.raises(SignalingError) as refused:
        await SignalingClient.connect(url, "forged")
    assert refused.value.code == "unauthorized"


async def test_unreachable_server() -> None:
    port = free_port(socket.SOCK_STREAM, both=False)  # nothing listens there
    with pytest.raises(LoginError, match="cannot reach"):
        await SignalingClient.login(f"http://127.0.0.1:{port}", "alice", "pw", timeout=2)
    with pytest.raises(SignalingError) as refused:
        await SignalingClient.connect(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    assert refused.value.code == "closed"
