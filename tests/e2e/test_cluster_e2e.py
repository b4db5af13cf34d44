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
- an administrator ends a call from a node that does not own it;
- every node hands out every node's relay;
- a call outlives its node (`_outlives_its_node`): `kill -9` of the caller's node mid-call, the
  tone keeps arriving, the caller re-attaches through another node, which takes the call over,
  and hangs up there; the call nobody re-attached is finalized `node-lost`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callgate.client.call import CallSession
from callgate.client.signaling import SignalingClient, SignalingError
from callgate.storage.db import open_store
from tests.cheap_passwords import template_accounts
from tests.db_backends import PgServer
from tests.e2e.helpers import (
    CALLS,
    Serve,
    cdr_row,
    connected,
    final_cdr,
    http_json,
    login,
    new_serve,
    next_of,
    password_of,
    quality_rows,
    rows_of,
    wait_for,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)
ADMIN = "root"
LEASE = 4.0  # seconds a silent node keeps its calls (the minimum; the default is 10)


def _get(server: Serve, path: str, token: str) -> Any:
    status, body = http_json(f"{server.url}{path}", token=token)
    assert status == 200, (status, body)
    return body


def _health(server: Serve) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=30) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:  # 503 while a check fails
        return dict(json.loads(error.read()))


def _presence(server: Serve, token: str) -> dict[str, str]:
    users = _get(server, "/api/directory", token)["users"]
    return {u["handle"]: u["presence"] for u in users}


def _live(server: Serve, token: str) -> list[str]:
    return [c["call_id"] for c in _get(server, "/api/live-calls", token)["calls"]]


def _turn_port(entry: dict[str, Any]) -> int | None:
    """The port of an ice_servers entry with TURN credentials (None for STUN)."""
    if "username" not in entry:
        return None
    return int(str(entry["urls"][0]).split("?")[0].rsplit(":", 1)[1])


def _only_relay(hello: dict[str, Any], node: Serve) -> dict[str, Any]:
    """`hello` with only `node`'s relay among those handed out, relayed media only."""
    servers = [e for e in hello["ice_servers"] if _turn_port(e) == node.turn_port]
    assert servers, hello["ice_servers"]
    return {**hello, "ice_servers": servers, "ice_transport_policy": "relay"}


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
            CALLGATE_CLUSTER_KEY_FILE=str(redis_server.cluster_key),
            # signaling-only calls: answered, never reaching media, must not time out mid-test
            CALLGATE_CALLS__SETUP_TIMEOUT="100",
            CALLGATE_NODE_LEASE=str(LEASE),
            # the nodes share their TURN REST secret: each hands out every node's relay
            CALLGATE_TURN__AUTH_SECRET="cluster-e2e-shared-turn-secret",
            CALLGATE_CALLS__SILENCE_TIMEOUT="8",  # the default: stats every 2 s cross two nodes
        )
        for name in ("a", "b", "c")
    ]
    store = open_store(database_url)  # in-process: two CLI runs cost seconds on a busy box
    try:
        accounts = template_accounts(store)
        accounts.create_user(ADMIN, password=password_of(ADMIN), is_admin=True)
        accounts.create_user("dave", password=password_of("dave"))
    finally:
        store.close()
    try:
        with ThreadPoolExecutor(len(servers)) as pool:  # the nodes start side by side
            list(pool.map(lambda server: server.start(timeout=90), servers))
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
        await wait_for(lambda: _presence(a, admin).get("bob") == "online", 30, "bob online on a")
        # a device on a is handed every node's relay (call-bound relaying needs both parties
        # of a call on one relay), with credentials the other relays accept
        async with connected(a, "carol", "tablet") as tablet:
            ports = {_turn_port(entry) for entry in tablet.hello["ice_servers"]}
            assert {a.turn_port, b.turn_port, c.turn_port} <= ports, tablet.hello

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
        await wait_for(lambda: call_id in _live(c, admin), 30, "the call listed on node c")
        await wait_for(lambda: _presence(c, admin).get("alice") == "in-call", 30, "alice busy")

        # kill -9 of node c and a restart: it finalizes its own open records only
        c.kill()
        c.start(timeout=90)
        assert cdr_row(db, call_id)["end_at"] is None, "node c closed a call owned by a"

        # Redis away: a new call is refused with the reason; the established call stays up
        redis_server.stop()
        await wait_for(lambda: not _health(a)["cluster"]["ok"], 30, "a sees Redis down")
        with pytest.raises(SignalingError) as refused:
            await _invite(carol, "bob", offer_sdp)
        assert refused.value.code == "unavailable", refused.value
        assert "Redis" in str(refused.value)
        redis_server.start()
        for node in nodes:  # every node recovers by itself, and sees the others
            await wait_for(
                lambda node=node: len(_health(node)["cluster"]["peers"]) == 2,
                30,
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
        await wait_for(lambda: second in _live(c, admin), 30, "the second call listed on c")
        status, _ = http_json(f"{c.url}/api/live-calls/{second}/end", body={}, token=admin)
        assert status == 202
        for client in (carol, bob_desk):
            ended = await next_of(client, "call.ended", second)
            assert ended["reason"] == "ended-by-admin", ended
        cdr = await final_cdr(db, second)
        assert cdr["node_id"] == "a" and cdr["ended_by"] == f"admin:{ADMIN}", cdr

    await _outlives_its_node(nodes, offer_sdp, answer_sdp)


# ---- a call outlives its node -------------------------------------------------------------------


async def _pump(client: SignalingClient, session: CallSession) -> None:
    """Server events of one signaling connection into the call session."""
    async for event in client.events():
        await session.handle(event)


async def _inbound_packets(session: CallSession) -> int:
    return sum(s["packets"] for s in await session.stats() if s["direction"] == "inbound")


async def _until_heard(session: CallSession, packets: int, timeout: float = 30.0) -> int:
    """Wait until `session` has received `packets` inbound packets in all; the count."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (count := await _inbound_packets(session)) < packets:
        assert asyncio.get_running_loop().time() < deadline, (count, packets)
        await asyncio.sleep(0.1)
    return count


async def _outlives_its_node(nodes: list[Serve], offer_sdp: str, answer_sdp: str) -> None:
    """Alice (on a) calls bob (on b) with real media, tones both ways, relayed by b and c;
    carol (on a) is in a signaling-only call with dave (on c). `kill -9` of a: bob keeps hearing
    alice's tone; alice re-attaches through c, which takes the call over, bob's stats reach c,
    alice hangs up there: one record, finalized once by c, with the true duration. The call
    nobody re-attached is finalized `node-lost` by a surviving node, at its last sign of life."""
    a, b, c = nodes
    db = a.database
    sessions: list[CallSession] = []
    pumps: list[asyncio.Task[None]] = []
    await wait_for(lambda: len(_health(a)["cluster"]["peers"]) == 2, 30, "a sees b and c")
    async with (
        connected(a, "alice", "laptop") as alice_a,
        connected(b, "bob", "desk") as bob,
        connected(a, "carol", "desk") as carol,
        connected(c, "dave", "desk") as dave,
        connected(c, "alice", "phone", token=await login(c, "alice")) as alice_c,
    ):
        try:
            # media through b's relay (each node embeds one, which dies with it), not a's; node
            # a hands alice b's relay too, and b admits the call a holds (call-bound relaying
            # is cluster-wide)
            alice = CallSession(alice_a, _only_relay(alice_a.hello, b), tone=440)
            bobs = CallSession(bob, _only_relay(bob.hello, b), tone=880)
            sessions += [alice, bobs]
            pumps.append(asyncio.create_task(_pump(alice_a, alice)))
            call_id = await alice.invite("bob")
            incoming = await next_of(bob, "call.incoming", call_id, timeout=30)
            pumps.append(asyncio.create_task(_pump(bob, bobs)))
            await bobs.accept(incoming)
            for session in (alice, bobs):
                await asyncio.wait_for(session.connected.wait(), 30)

            # the signaling-only call that nobody will re-attach
            lost = await _invite(carol, "dave", offer_sdp)
            await next_of(dave, "call.incoming", lost)
            await dave.request("call.answer", call_id=lost, sdp=answer_sdp)
            await next_of(carol, "call.answered", lost)
            await wait_for(lambda: cdr_row(db, call_id)["media_path"] is not None, 30, "media")
            # a's last sign of life for the lost call: a heartbeat stamped from now on (waited
            # for: a loaded machine beats late), so its record must end no earlier than that
            since = datetime.now(UTC)

            def fresh_beat() -> datetime | None:
                beat = cdr_row(db, lost)["last_alive_at"]
                return beat if beat is not None and beat >= since else None

            last_beat = await wait_for(fresh_beat, 30, "a heartbeat of the lost call")

            # kill -9 of alice's node: bob still hears her
            heard, alice_heard = await _inbound_packets(bobs), await _inbound_packets(alice)
            a.kill()
            killed_at = datetime.now(UTC)
            a.proc = None  # killed on purpose: the fixture does not stop it
            await asyncio.sleep(1.0)

            # alice re-attaches through c; c takes the call over
            pumps.append(asyncio.create_task(_pump(alice_c, alice)))
            ack = await alice.reattach(alice_c, within=15 * LEASE)  # retried while refused
            assert (ack["call_id"], ack["role"], ack["state"]) == (call_id, "caller", "media"), ack
            taken_at = datetime.now(UTC)
            assert cdr_row(db, call_id)["node_id"] == "c"
            # 1 s+ of 20 ms packets since the kill, each way (waited for: an outcome)
            after_kill = await _until_heard(bobs, heard + 51)
            await _until_heard(alice, alice_heard + 51)  # and alice hears bob

            # bob's stats (every 2 s) reach the new holder through b
            await wait_for(
                lambda: any(
                    q["reporter"] == "callee" and q["reported_at"] > taken_at
                    for q in quality_rows(db, call_id)
                ),
                30,
                "bob's stats recorded after the take-over",
            )
            await _until_heard(bobs, after_kill + 1)  # the tone still arrives

            hanging_up = datetime.now(UTC)
            await alice.hangup()
            hung_up = datetime.now(UTC)
            await asyncio.wait_for(bobs.ended.wait(), 30)
            assert (bobs.reason, bobs.ended_by) == ("hangup", "caller")
            cdr = await final_cdr(db, call_id)
            assert (cdr["node_id"], cdr["disposition"], cdr["reason"]) == (
                "c",
                "answered",
                "hangup",
            )
            # ended while the test hung up (a slow machine widens the window, not the error)
            slack = timedelta(seconds=1)
            assert hanging_up - slack <= cdr["end_at"] <= hung_up + slack, (cdr, hanging_up)
            assert cdr["duration_s"] == pytest.approx(
                (cdr["end_at"] - cdr["answer_at"]).total_seconds(), abs=0.01
            )
            assert len(rows_of(db, CALLS, CALLS.c.call_id == call_id)) == 1

            # the call nobody re-attached: finalized node-lost, ended at a's last beat
            ended = await next_of(dave, "call.ended", lost, timeout=15 * LEASE)
            assert (ended["reason"], ended["ended_by"]) == ("node-lost", "server"), ended
            cdr = await final_cdr(db, lost)
            assert (cdr["disposition"], cdr["reason"]) == ("answered", "node-lost"), cdr
            assert last_beat <= cdr["end_at"] <= killed_at, (last_beat, cdr, killed_at)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for session in sessions:
                await session.close()
