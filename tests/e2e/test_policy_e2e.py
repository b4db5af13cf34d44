"""Call policy through the real server, set up through its REST API as an admin
(docs/policy.md): a denied call tells the caller `call.denied` and never rings the callee; an
ethical wall holds both ways; a max-duration rule makes the server end an answered call; a
relay-only rule strips the direct candidates of one call although the server-wide ICE policy is
"all". Each test removes its rule; changes take effect on the next call.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from callgate.client.signaling import SignalingClient
from tests.db_backends import BACKENDS, PgServer
from tests.e2e.helpers import (
    Serve,
    connected,
    final_cdr,
    http_json,
    login,
    new_serve,
    next_of,
    no_event,
    password_of,
)

pytestmark = pytest.mark.timeout(90)
ADMIN = "root"


@pytest.fixture(scope="module", params=BACKENDS)
def serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, user_template: object
) -> Iterator[Serve]:
    database_url = None
    if request.param == "postgresql":
        pg: PgServer = request.getfixturevalue("pg_server")
        database_url = pg.new_database(request.getfixturevalue("pg_users"))
    server = new_serve(
        tmp_path_factory.mktemp("policy"),
        template=user_template,  # type: ignore[arg-type]
        database_url=database_url,
        CALLGATE_CALLS__ICE_POLICY="all",
    )
    result = server.cli("user", "add", ADMIN, "--admin", "--password-stdin",
                        stdin=password_of(ADMIN) + "\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    server.start()
    token = asyncio.run(login(server, ADMIN))
    for group, member in (("sales", "alice"), ("legal", "bob")):
        status, answer = http_json(f"{server.url}/api/groups", body={"name": group}, token=token)
        assert status == 201, answer
        url = f"{server.url}/api/groups/{group}/members/{member}"
        assert _request("PUT", url, token) == 200
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"callgate serve exited {code} on SIGTERM:\n{server.log()}"
    assert "Traceback" not in server.log(), server.log()


def _request(method: str, url: str, token: str) -> int:
    """A bodiless PUT or DELETE; its status."""
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


@pytest.fixture(scope="module")
def admin_token(serve: Serve) -> str:
    return asyncio.run(login(serve, ADMIN))


@contextmanager
def rule(serve: Serve, token: str, body: dict[str, Any]) -> Iterator[str]:
    """Add a rule through the API (its label "<id>:<name>"), remove it afterwards."""
    status, created = http_json(f"{serve.url}/api/policy/rules", body=body, token=token)
    assert status == 201, created
    try:
        yield f"{created['id']}:{created['name']}"
    finally:
        assert _request("DELETE", f"{serve.url}/api/policy/rules/{created['id']}", token) == 204


async def invite(caller: SignalingClient, to: str, sdp: str) -> str:
    ack = await caller.request("call.invite", to=to, sdp=sdp)
    assert ack["type"] == "ack", ack
    return str(ack["call_id"])


async def test_a_denied_call_never_rings(serve: Serve, admin_token: str, offer_sdp: str) -> None:
    body = {"name": "carol-away", "action": "deny", "callee": {"user": "carol"},
            "reason": "carol is on leave"}  # fmt: skip
    with rule(serve, admin_token, body) as label:
        async with connected(serve, "alice") as alice, connected(serve, "carol") as carol:
            call_id = await invite(alice, "carol", offer_sdp)
            denied = await next_of(alice, "call.denied", call_id)
            assert (denied["reason"], denied["rule"]) == ("carol is on leave", label)
            assert (await next_of(alice, "call.ended", call_id))["reason"] == "policy-denied"
            await no_event(carol, within=0.5)  # never rung
            row = await final_cdr(serve.database, call_id)
    assert (row["disposition"], row["reason"], row["ended_by"]) == (
        "denied",
        "policy-denied",
        "server",
    )
    assert (row["policy_rule"], row["policy_decision"]) == (label, "deny")
    assert row["ring_at"] is None


@pytest.mark.parametrize(("caller", "callee"), [("alice", "bob"), ("bob", "alice")])
async def test_an_ethical_wall_holds_both_ways(
    serve: Serve, admin_token: str, offer_sdp: str, caller: str, callee: str
) -> None:
    body = {"name": "wall", "action": "deny", "caller": {"group": "sales"},
            "callee": {"group": "legal"}, "wall": True, "reason": "ethical wall"}  # fmt: skip
    with rule(serve, admin_token, body) as label:
        async with connected(serve, caller) as a, connected(serve, callee) as b:
            call_id = await invite(a, callee, offer_sdp)
            denied = await next_of(a, "call.denied", call_id)
            assert (denied["reason"], denied["rule"]) == ("ethical wall", label)
            await no_event(b, within=0.5)
    # The same two with the rule gone: the call rings.
    async with connected(serve, caller) as a, connected(serve, callee) as b:
        call_id = await invite(a, callee, offer_sdp)
        await next_of(b, "call.incoming", call_id)
        await a.request("call.hangup", call_id=call_id)
        row = await final_cdr(serve.database, call_id)
    assert (row["policy_rule"], row["policy_decision"]) == ("default", "allow")


async def test_max_duration_is_enforced_by_the_server(
    serve: Serve, admin_token: str, offer_sdp: str, answer_sdp: str
) -> None:
    body = {"name": "short", "action": "allow", "caller": {"user": "carol"},
            "callee": {"user": "bob"}, "max_duration_s": 2}  # fmt: skip
    with rule(serve, admin_token, body) as label:
        async with connected(serve, "carol") as carol, connected(serve, "bob") as bob:
            call_id = await invite(carol, "bob", offer_sdp)
            await next_of(bob, "call.incoming", call_id)
            answering = time.monotonic()
            assert (await bob.request("call.answer", call_id=call_id, sdp=answer_sdp))[
                "type"
            ] == "ack"
            await next_of(carol, "call.answered", call_id)
            ended = await next_of(carol, "call.ended", call_id, timeout=20)
            lasted = time.monotonic() - answering  # an upper bound of the call's true duration
            assert (ended["reason"], ended["ended_by"]) == ("max-duration", "server")
            assert (await next_of(bob, "call.ended", call_id))["reason"] == "max-duration"
            row = await final_cdr(serve.database, call_id)
    assert (row["disposition"], row["reason"]) == ("answered", "max-duration")
    assert (row["policy_rule"], row["policy_decision"], row["recording_required"]) == (
        label, "allow", False,
    )  # fmt: skip
    # not cut short; how late past 2 s the server ends it depends on the machine's load
    assert 1.99 <= row["duration_s"] <= lasted + 0.01, (row["duration_s"], lasted)


def _with_candidates(sdp: str, relay: str) -> str:
    """The offer with a host, a srflx and one relay candidate (on our relay) after its m= line."""
    lines = [line for line in sdp.split("\r\n") if not line.startswith("a=candidate")]
    at = next(i for i, line in enumerate(lines) if line.startswith("m=audio")) + 1
    extra = [
        "a=candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host",
        "a=candidate:2 1 udp 1686052607 198.51.100.44 50001 typ srflx raddr 192.168.1.20 rport 50000",
        f"a=candidate:3 1 udp 41885439 {relay} typ relay raddr 198.51.100.44 rport 50001",
    ]
    return "\r\n".join(lines[:at] + extra + lines[at:])


async def test_relay_only_rule_changes_the_candidates_the_callee_gets(
    serve: Serve, admin_token: str, offer_sdp: str
) -> None:
    relay = f"127.0.0.1 {serve.relay_ports[0]}"
    offer = _with_candidates(offer_sdp, relay)
    async with connected(serve, "carol") as carol, connected(serve, "alice") as alice:
        assert alice.hello["ice_transport_policy"] == "all"  # the server-wide policy
        call_id = await invite(carol, "alice", offer)
        before = (await next_of(alice, "call.incoming", call_id))["sdp"]
        await carol.request("call.hangup", call_id=call_id)
    assert "typ host" in before and "typ srflx" in before and "typ relay" in before

    body = {"name": "relay-carol", "action": "allow", "caller": {"user": "carol"},
            "relay_only": True}  # fmt: skip
    with rule(serve, admin_token, body):
        async with connected(serve, "carol") as carol, connected(serve, "alice") as alice:
            call_id = await invite(carol, "alice", offer)
            after = (await next_of(alice, "call.incoming", call_id))["sdp"]
            host = {"candidate": "candidate:9 1 udp 2122260223 10.1.2.3 50002 typ host",
                    "sdpMid": "0"}  # fmt: skip
            ack = await carol.request("call.candidate", call_id=call_id, candidate=host)
            assert ack["forwarded"] is False
            await asyncio.sleep(0.2)
            await carol.request("call.hangup", call_id=call_id)
    assert "typ host" not in after and "typ srflx" not in after
    assert f"{relay} typ relay" in after
