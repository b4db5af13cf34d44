"""Attacks through signaling and call records on a running `callgate serve` (issue 12):
handles are case-insensitive everywhere (item 13: "BOB" rings bob, " Bob" calling bob is a
self-call, "ALICE" signs in as alice, the API and CLI find "ALICE"); a plain user's call record
does not show the other party's address, device or user agent (item 5)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from callgate.client.errors import SignalingError
from callgate.client.signaling import SignalingClient
from tests.integration.serve_fixture import PASSWORDS, WebServer, serve
from tests.integration.test_cli import callgate

pytestmark = pytest.mark.timeout(90)
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    yield from serve(tmp_path_factory.mktemp("case"))


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
