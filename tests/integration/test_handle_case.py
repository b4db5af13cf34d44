"""Handles are case-insensitive everywhere on a running `callgate serve` (issue 12 item 13):
"BOB" rings bob, "CAROL" calling carol is a self-call, "ALICE" signs in as alice, and the API
and CLI find "ALICE"."""

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
