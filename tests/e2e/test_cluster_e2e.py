"""Several signaling nodes (docs/scaling.md): three `callgate serve --node-id … --redis-url …`
on one PostgreSQL database and a private Redis server, all on loopback.

One test, so the servers start once: it proves, in order,
- presence is cluster-wide (the directory on node a shows bob, connected to b and c);
- a call from a device on a rings bob's devices on b and c; b answers, c hears
  `answered-elsewhere`; live calls are listed on every node;
- a node restarted by `kill -9` finalizes only its own open records (the call owned by a stays
  open);
- Redis stopped: a new call is refused `unavailable` (fail closed), the established call is not
  ended; Redis back: the nodes recover by themselves and new calls ring across nodes;
- the established call's hang-up still crosses nodes; one CDR, owned by a, with its duration;
- an administrator ends a call from a node that does not own it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from callgate.client.signaling import SignalingClient, SignalingError
from tests.db_backends import PgServer
from tests.e2e.helpers import (
    Serve,
    cdr_row,
    connected,
    final_cdr,
    http_json,
    login,
    new_serve,
    next_of,
    password_of,
    wait_for,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(240)
ADMIN = "root"


def _get(server: Serve, path: str, token: str) -> Any:
    status, body = http_json(f"{server.url}{path}", token=token)
    assert status == 200, (status, body)
    return body


def _health(server: Serve) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:  # 503 while a check fails
        return dict(json.loads(error.read()))


def _presence(server: Serve, token: str) -> dict[str, str]:
    users = _get(server, "/api/directory", token)["users"]
    return {u["handle"]: u["presence"] for u in users}


def _live(server: Serve, token: str) -> list[str]:
    return [c["call_id"] for c in _get(server, "/api/live-calls", token)["calls"]]


async def _invite(caller: SignalingClient, to: str, sdp: str) -> str:
    ack = await caller.request("call.invite", to=to, sdp=sdp)
    return str(ack["call_id"])


@pytest.fixture
def nodes(tmp_path: Path, pg_server: PgServer, pg_users: str, redis_server: RedisServer) -> Any:
    database_url = pg_server.new_database(pg_users)
    servers = [
        new_serve(
            tmp_path / name,
            database_url=database_url,
            CALLGATE_NODE_ID=name,
            CALLGATE_REDIS_URL=redis_server.url,
            # signaling-only calls: answered, never reaching media, must not time out mid-test
            CALLGATE_CALLS__SETUP_TIMEOUT="100",
        )
        for name in ("a", "b", "c")
    ]
    added = servers[0].cli("user", "add", ADMIN, "--admin", "--password-stdin",
                           stdin=password_of(ADMIN) + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    try:
        with ThreadPoolExecutor(len(servers)) as pool:  # the nodes start side by side
            list(pool.map(lambda server: server.start(), servers))
        yield servers
    finally:
        with ThreadPoolExecutor(len(servers)) as pool:
            codes = list(pool.map(lambda s: s.stop() if s.proc is not None else 0, servers))
        for server, code in zip(servers, codes, strict=True):
            assert code == 0, f"node exited {code}:\n{server.log()}"
            assert "Traceback" not in server.log(), server.log()


async def test_three_nodes_one_call(
    nodes: list[Serve], redis_server: RedisServer, offer_sdp: str, answer_sdp: str
) -> None:
    a, b, c = nodes
    db = a.database
    admin = await login(c, ADMIN)
    async with (
        connected(a, "alice", "laptop") as alice,
        connected(a, "carol", "desk") as carol,
        connected(b, "bob", "desk") as bob_desk,
        connected(c, "bob", "phone") as bob_phone,
    ):
        # presence is cluster-wide: a sees bob, who is connected to b and c only
        await wait_for(lambda: _presence(a, admin).get("bob") == "online", 10, "bob online on a")

        # one call rings on two nodes; b answers, c hears answered-elsewhere
        call_id = await _invite(alice, "bob", offer_sdp)
        ringing = await next_of(alice, "call.ringing", call_id)
        assert ringing["devices"] == 2, ringing
        incoming = await next_of(bob_phone, "call.incoming", call_id)
        assert incoming["from"]["handle"] == "alice"
        await next_of(bob_desk, "call.incoming", call_id)
        await bob_desk.request("call.answer", call_id=call_id, sdp=answer_sdp)
        answered = await next_of(alice, "call.answered", call_id)
        assert answered["sdp"]
        ended = await next_of(bob_phone, "call.ended", call_id)
        assert ended["reason"] == "answered-elsewhere", ended
        await wait_for(lambda: call_id in _live(c, admin), 10, "the call listed on node c")
        await wait_for(lambda: _presence(c, admin).get("alice") == "in-call", 10, "alice busy")

        # kill -9 of node c and a restart: it finalizes its own open records only
        c.kill()
        c.start()
        assert cdr_row(db, call_id)["end_at"] is None, "node c closed a call owned by a"

        # Redis away: a new call is refused with the reason; the established call stays up
        redis_server.stop()
        await wait_for(lambda: not _health(a)["cluster"]["ok"], 10, "a sees Redis down")
        with pytest.raises(SignalingError) as refused:
            await _invite(carol, "bob", offer_sdp)
        assert refused.value.code == "unavailable", refused.value
        assert "Redis" in str(refused.value)
        redis_server.start()
        for node in nodes:  # every node recovers by itself, and sees the others
            await wait_for(
                lambda node=node: len(_health(node)["cluster"]["peers"]) == 2,
                15,
                f"node {node.http_port} back on the bus",
            )
        assert cdr_row(db, call_id)["end_at"] is None

        # the established call's hang-up crosses from b to a
        await bob_desk.request("call.hangup", call_id=call_id)
        ended = await next_of(alice, "call.ended", call_id)
        assert (ended["reason"], ended["ended_by"]) == ("hangup", "callee"), ended
        cdr = await final_cdr(db, call_id)
        assert cdr["node_id"] == "a" and cdr["disposition"] == "answered", cdr
        assert cdr["callee_device"] == bob_desk.hello["device_id"]
        assert cdr["reason"] == "hangup" and cdr["duration_s"] > 0, cdr

        # after recovery a new call rings across nodes; node c (not its owner) ends it
        second = await _invite(carol, "bob", offer_sdp)
        assert (await next_of(carol, "call.ringing", second))["devices"] == 1
        await next_of(bob_desk, "call.incoming", second)
        await wait_for(lambda: second in _live(c, admin), 10, "the second call listed on c")
        status, _ = http_json(f"{c.url}/api/live-calls/{second}/end", body={}, token=admin)
        assert status == 202
        for client in (carol, bob_desk):
            ended = await next_of(client, "call.ended", second)
            assert ended["reason"] == "ended-by-admin", ended
        cdr = await final_cdr(db, second)
        assert cdr["node_id"] == "a" and cdr["ended_by"] == f"admin:{ADMIN}", cdr
