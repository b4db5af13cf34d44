"""Attacks through signaling and call records on a running `callgate serve` (issue 12):
handles are case-insensitive everywhere (item 13: "BOB" rings bob, " Bob" calling bob is a
self-call, "ALICE" signs in as alice, the API and CLI find "ALICE"); a plain user's call record
does not show the other party's address, device or user agent (item 5); one account cannot
open sockets or write call records without bound (item 8)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from callgate.client.errors import SignalingError
from callgate.client.signaling import SignalingClient
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import PASSWORDS, WebServer, serve

pytestmark = pytest.mark.timeout(90)
MAX_DEVICES = 3
ATTEMPTS_PER_MINUTE = 5
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    yield from serve(
        tmp_path_factory.mktemp("signaling"),
        CALLGATE_CALLS__MAX_DEVICES_PER_USER=str(MAX_DEVICES),
        CALLGATE_CALLS__CALL_ATTEMPTS_PER_MINUTE=str(ATTEMPTS_PER_MINUTE),
    )


@contextlib.asynccontextmanager
async def device(server: WebServer, handle: str) -> AsyncIterator[SignalingClient]:
    session = await SignalingClient.login(server.url, handle, PASSWORDS[handle.lower()])
    client = await SignalingClient.connect(server.url, session.token, "test", timeout=20)
    try:
        yield client
    finally:
        await client.close()


async def next_of(client: SignalingClient, kind: str) -> dict[str, Any]:
    while True:
        event = await client.next_event(timeout=20)
        if event.get("type") == kind:
            return event


async def test_an_upper_case_callee_rings_the_account(server: WebServer) -> None:
    async with device(server, "ALICE") as alice, device(server, "bob") as bob:
        ack = await alice.request("call.invite", to="BOB", sdp=SDP, timeout=20)
        incoming = await next_of(bob, "call.incoming")
        assert incoming["call_id"] == ack["call_id"]
        assert incoming["from"]["handle"] == "alice"  # "ALICE" signed in as alice
        await alice.request("call.hangup", call_id=ack["call_id"], timeout=20)


async def test_calling_yourself_in_upper_case_is_a_self_call(server: WebServer) -> None:
    async with device(server, "bob") as bob:
        with pytest.raises(SignalingError) as refused:
            await bob.request("call.invite", to=" Bob", sdp=SDP, timeout=20)
        assert refused.value.code == "bad-request" and "yourself" in str(refused.value)


def test_api_paths_and_cli_arguments_are_case_insensitive(server: WebServer) -> None:
    headers = {"Authorization": f"Bearer {server.token('admin')}"}
    with server.client() as client:
        found = client.patch("/api/users/ALICE", json={"display_name": "Alice"}, headers=headers)
    assert found.status_code == 200 and found.json()["handle"] == "alice"
    data = str(server.root / "data")
    added = callgate("user", "add", "Dave", "--data-dir", data, cwd=server.root,
                     CALLGATE_PASSWORD="fourth-pass-4")  # fmt: skip
    assert added.returncode == 0 and "dave" in added.stdout, added.stderr
    again = callgate("user", "add", "DAVE", "--data-dir", data, cwd=server.root,
                     CALLGATE_PASSWORD="fourth-pass-4")  # fmt: skip
    assert again.returncode == 1 and "exists" in again.stderr


async def test_a_plain_user_does_not_see_the_other_partys_identity(server: WebServer) -> None:
    async with device(server, "alice") as alice, device(server, "bob") as bob:
        ack = await alice.request("call.invite", to="bob", sdp=SDP, timeout=20)
        call_id = ack["call_id"]
        await next_of(bob, "call.incoming")
        await bob.request("call.answer", call_id=call_id, sdp=SDP, timeout=20)
        await next_of(alice, "call.answered")
        await alice.request("call.hangup", call_id=call_id, timeout=20)
        await next_of(bob, "call.ended")

    def record(handle: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {server.token(handle)}"}
        with server.client() as client:
            answer = client.get(f"/api/cdrs/{call_id}", headers=headers)
            assert answer.status_code == 200, answer.text
            listed = client.get("/api/calls", headers=headers).json()["calls"]
        (call,) = [c for c in listed if c["call_id"] == call_id]
        return {**answer.json(), "listed": call}

    seen_by_admin = record("admin")["cdr"]
    assert seen_by_admin["caller_address"] and seen_by_admin["callee_address"]
    assert seen_by_admin["caller_device"] and seen_by_admin["caller_user_agent"]
    bobs = record("bob")
    for view in (bobs["cdr"], bobs["listed"]):
        assert (view["caller_address"], view["caller_device"], view["caller_user_agent"]) == (
            None, None, None,
        )  # fmt: skip
        assert view["callee_address"] == seen_by_admin["callee_address"]  # his own side
    details = [event["details"] for event in bobs["events"]]
    assert details and all("caller_address" not in d for d in details)
    alices = record("alice")["cdr"]
    assert alices["callee_address"] is None and alices["callee_device"] is None
    assert alices["caller_address"] == seen_by_admin["caller_address"]


async def test_one_account_cannot_open_sockets_without_bound(server: WebServer) -> None:
    session = await SignalingClient.login(server.url, "admin", PASSWORDS["admin"])
    clients = [
        await SignalingClient.connect(server.url, session.token, f"d{i}", timeout=20)
        for i in range(MAX_DEVICES)
    ]
    try:
        url = server.url.replace("http://", "ws://") + f"/ws?token={session.token}&device=more"
        async with ws_connect(url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    finally:
        for client in clients:
            await client.close()
    # Closed sockets free their places.
    again = await SignalingClient.connect(server.url, session.token, "again", timeout=20)
    await again.close()


async def test_call_attempts_to_unknown_handles_are_bounded(server: WebServer) -> None:
    session = await SignalingClient.login(server.url, "admin", PASSWORDS["admin"])
    client = await SignalingClient.connect(server.url, session.token, "spray", timeout=20)
    started = time.monotonic()
    refused = 0
    try:
        for i in range(20):
            try:
                await client.request("call.invite", to=f"nobody{i}", sdp=SDP, timeout=20)
            except SignalingError as exc:
                assert exc.code == "rate-limited", exc
                refused += 1
    finally:
        await client.close()
    refills = math.ceil((time.monotonic() - started) * ATTEMPTS_PER_MINUTE / 60)
    assert refused >= 20 - ATTEMPTS_PER_MINUTE - refills
    headers = {"Authorization": f"Bearer {server.token('admin')}"}
    with server.client() as http:
        rows = http.get("/api/cdrs", params={"party": "admin", "limit": 100}, headers=headers)
    assert rows.status_code == 200, rows.text
    written = [c for c in rows.json()["items"] if c["callee_user"].startswith("nobody")]
    assert len(written) == 20 - refused  # a refused attempt writes no record
