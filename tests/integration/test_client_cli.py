"""`callgate login / call / answer` as processes, against a stand-in signaling server.

The stand-in (Starlette on loopback) routes call messages between sockets with FakeRelay, and
hands out a relay-only hello for an in-process callgate TURN server. The callee process records,
the caller process sends a tone: the recording must hold the tone, and both exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callgate.client.audio import dominant_frequency
from callgate.client.errors import SignalingError
from callgate.types import Transport
from tests.conftest import run_turn_server, server_address
from tests.integration.fake_signaling import FakeRelay, hello_for

CALLGATE = [str(Path(sys.executable).parent / "callgate")]


def build_app(turn: tuple[str, int]) -> Starlette:
    relay = FakeRelay()

    async def login(request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("password") != "pw":
            return JSONResponse({"detail": "invalid credentials"}, status_code=401)
        handle = body["handle"]
        return JSONResponse(
            {"token": f"tok-{handle}", "expires_at": "", "user": {"handle": handle}}
        )

    async def ws(sock: WebSocket) -> None:
        await sock.accept()
        token = sock.query_params.get("token", "")
        if not token.startswith("tok-"):
            await sock.close(code=4401)
            return
        endpoint = relay.endpoint(token.removeprefix("tok-"))
        await sock.send_json(hello_for(endpoint.handle, turn))

        async def forward() -> None:
            while True:
                await sock.send_json(await endpoint.events.get())

        forwarder = asyncio.create_task(forward())
        try:
            while True:
                message: dict[str, Any] = await sock.receive_json()
                mid = message.pop("id")
                try:
                    reply = await relay.handle(endpoint, message)
                    await sock.send_json({**reply, "id": mid})
                except SignalingError as exc:
                    error = {"type": "error", "id": mid, "code": exc.code, "message": exc.message}
                    await sock.send_json(error)
        except WebSocketDisconnect:
            return
        finally:
            forwarder.cancel()

    routes = [Route("/api/login", login, methods=["POST"]), WebSocketRoute("/ws", ws)]
    return Starlette(routes=routes)


@contextlib.asynccontextmanager
async def run_stand_in() -> AsyncIterator[str]:
    async with run_turn_server() as turn_server:
        app = build_app(server_address(turn_server, Transport.UDP))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="off")
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            sock.close()


def env_for(url: str, tmp_path: Path, user: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env.update(CALLGATE_SERVER=url, CALLGATE_CONFIG_DIR=str(tmp_path / f"cfg-{user}"))
    if user:
        env.update(CALLGATE_USER=user, CALLGATE_PASSWORD="pw")
    env.update(extra)
    return env


async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CALLGATE, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, list[dict[str, Any]], str]:
    try:
        out, errs = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        out, errs = await process.communicate()
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert process.returncode is not None
    return process.returncode, events, errs.decode()


@pytest.mark.timeout(180)  # CLI processes start slowly on a loaded machine
async def test_cli_call_and_answer_through_the_relay(tmp_path: Path) -> None:
    recording = tmp_path / "bob.wav"
    async with run_stand_in() as url:
        bob = await start(
            "answer", "--count", "1", "--record", str(recording), "--json",
            env=env_for(url, tmp_path, "bob"),
        )  # fmt: skip
        assert bob.stdout is not None
        ready = json.loads(await asyncio.wait_for(bob.stdout.readline(), 60))
        assert ready == {"event": "ready", "user": "bob", "device_id": "bob-1"}
        alice = await start(
            "call", "bob", "--tone", "440", "--duration", "2", "--json",
            env=env_for(url, tmp_path, "alice"),
        )  # fmt: skip
        code, events, errors = await finish(alice)
        bob_code, bob_events, bob_errors = await finish(bob)

    assert code == 0, errors
    assert bob_code == 0, bob_errors
    names = [e["event"] for e in events]
    assert names[:2] == ["calling", "ringing"], names
    assert "connected" in names and names[-1] == "ended"
    (connected,) = [e for e in events + bob_events if e["event"] == "connected"][:1]
    assert (connected["local_candidate_type"], connected["remote_candidate_type"]) == (
        "relay",
        "relay",
    )
    assert events[-1]["reason"] == "hangup" and events[-1]["ended_by"] == "caller"
    assert [e["event"] for e in bob_events if e["event"] in ("incoming", "connected", "ended")] == [
        "incoming",
        "connected",
        "ended",
    ]
    assert abs(dominant_frequency(recording) - 440.0) < 5.0


@pytest.mark.timeout(180)  # CLI processes start slowly on a loaded machine
async def test_cli_login_saves_a_private_session_and_failures_exit_non_zero(
    tmp_path: Path,
) -> None:
    async with run_stand_in() as url:
        env = env_for(url, tmp_path, None)
        login = await asyncio.create_subprocess_exec(
            *CALLGATE, "login", "--user", "alice", "--password-stdin",
            env=env, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, errors = await asyncio.wait_for(login.communicate(b"pw\n"), 60)
        assert login.returncode == 0, errors.decode()
        session_file = Path(env["CALLGATE_CONFIG_DIR"]) / "session.json"
        assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
        assert json.loads(session_file.read_text())["token"] == "tok-alice"

        # the saved session is used: calling a handle nobody has fails with exit 1
        code, events, errors = await finish(await start("call", "nobody", "--json", env=env))
        assert code == 1, errors
        assert events[-1] == {
            "event": "ended",
            "call_id": None,
            "reason": "not-found",
            "message": "no such user",
        }

        bad = env_for(url, tmp_path, "alice", CALLGATE_PASSWORD="wrong")
        code, _, errors = await finish(await start("call", "bob", env=bad))
        assert code == 1 and "invalid credentials" in errors

        code, _, errors = await finish(await start("call", "bob", "--tone", "5", env=env))
        assert code == 2 and "--tone" in errors

        no_session = env_for(url, tmp_path, None, CALLGATE_CONFIG_DIR=str(tmp_path / "empty"))
        code, _, errors = await finish(await start("answer", env=no_session))
        assert code == 1 and "not signed in" in errors
