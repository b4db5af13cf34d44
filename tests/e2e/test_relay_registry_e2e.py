"""Separate relays (docs/scaling.md, "Separate relays"): two `callgate turn` processes registered
in a private Redis (regions eu and us), one node `callgate serve --region eu`, PostgreSQL; all on
loopback, real aiortc media with tones.

One test, so the processes start once: it proves, in order,
- both relays register, each with its own relay key; registrations forged in Redis (unsigned,
  or signed with another key: docs/scaling.md, "Trust") are ignored and logged; call pairs
  forged with a relay's key or another key are counted on the eu relay's /metrics; a client of the node's region gets the eu
  relay first, the us relay next, and never a forged one;
- per call: a caller whose media uses the us relay gets its callee the us relay first in
  `call.incoming`, so both allocate there (call-bound relaying admits them: the relay reads the
  node's live calls); the tone arrives; the CDR carries the call's relay use, from the relay
  sessions the us relay wrote (marked with its id);
- drain through the admin API mid-call: new clients are no longer handed eu, the call on it keeps
  its media, ends normally, then the eu relay exits by itself (status 0);
- a relay that stops heartbeating (SIGSTOP) is no longer handed out; beating again, it is;
- `callgate turn --drain --node-id us` drains the us relay and returns once it has exited.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from sqlalchemy import Table

from callgate.client.call import CallSession
from callgate.client.ice import call_hello
from callgate.client.signaling import SignalingClient
from callgate.runtime.cluster_keys import parse_relay_key
from callgate.runtime.cluster_seal import ClusterSeal
from callgate.storage.db import open_store
from callgate.storage.models import AuditEntry
from tests.cheap_passwords import template_accounts
from tests.cli_process import COMMAND, clean_env
from tests.db_backends import PgServer
from tests.e2e.helpers import (
    CALLS,
    LOOPBACK,
    Serve,
    callgate,
    cdr_row,
    connected,
    final_cdr,
    http_json,
    login,
    new_serve,
    next_of,
    password_of,
    read_event,
    relay_sessions,
    rows_of,
    start_cli,
    wait_for,
)
from tests.ports import free_port, relay_port_range
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(420)  # 207 s seen with the suite's load and four CPU hogs
ADMIN = "root"
SECRET = "relay-registry-e2e-shared-turn-secret"
LEASE = 4.0  # seconds a silent node keeps its calls (the minimum)
SILENCE_TIMEOUT = 8.0  # calls.silence_timeout, the default: a call without stats this long ends


@dataclass
class Relay:
    """A running `callgate turn`, registered as `relay_id` in `region`."""

    relay_id: str
    region: str
    port: int
    relay_ports: tuple[int, int]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Relay:
        low, high = self.relay_ports
        args = [
            "turn", "--listen", f"{LOOPBACK}:{self.port}", "--relay-ports", f"{low}-{high}",
            "--node-id", self.relay_id, "--region", self.region,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*COMMAND, *args], env=clean_env(**self.env), stdout=log, stderr=log
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def _turn_ports(ice_servers: list[dict[str, Any]]) -> list[int]:
    """The ports of the TURN entries handed out, in order."""
    return [
        int(str(e["urls"][0]).split("?")[0].rsplit(":", 1)[1])
        for e in ice_servers
        if "username" in e
    ]


def _only(hello: dict[str, Any], relay: Relay) -> dict[str, Any]:
    servers = [e for e in hello["ice_servers"] if _turn_ports([e]) == [relay.port]]
    assert servers, hello["ice_servers"]
    return {**hello, "ice_servers": servers, "ice_transport_policy": "relay"}


def _registered(node: Serve, token: str) -> dict[str, dict[str, Any]]:
    status, body = http_json(f"{node.url}/api/relays/registered", token=token)
    assert status == 200, (status, body)
    return {r["id"]: r for r in body["relays"]}


@pytest.fixture
def cluster(
    tmp_path: Path, pg_server: PgServer, pg_users: str, redis_server: RedisServer
) -> Iterator[tuple[Serve, Serve, Relay, Relay]]:
    database_url = pg_server.new_database(pg_users)
    store = open_store(database_url)
    try:
        template_accounts(store).create_user(ADMIN, password=password_of(ADMIN), is_admin=True)
    finally:
        store.close()
    shared = {
        "CALLGATE_REDIS_URL": redis_server.url,
        "CALLGATE_DATABASE_URL": database_url,
        "CALLGATE_TURN__AUTH_SECRET": SECRET,
    }
    metrics = {"eu": {"CALLGATE_METRICS": f"{LOOPBACK}:{free_port()}"}, "us": {}}
    eu, us = (  # each relay holds its own key, not the nodes'
        Relay(name, name, free_port(), relay_port_range(200), tmp_path / f"{name}.log",
              {**shared, "CALLGATE_RELAY_KEY_FILE": str(redis_server.relay_key(name)),
               **metrics[name]})
        for name in ("eu", "us")
    )  # fmt: skip
    n1, n2 = (
        new_serve(
            tmp_path / name,
            database_url=database_url,
            CALLGATE_NODE_ID=name,
            CALLGATE_REGION="eu",
            CALLGATE_REDIS_URL=redis_server.url,
            CALLGATE_CLUSTER_KEY_FILE=str(redis_server.cluster_key),
            CALLGATE_TURN__AUTH_SECRET=SECRET,
            CALLGATE_NODE_LEASE=str(LEASE),
        )
        for name in ("n1", "n2")
    )
    _forge_registrations(redis_server.url)
    try:
        eu.start()
        us.start()
        with ThreadPoolExecutor(2) as pool:  # the nodes start side by side
            list(pool.map(lambda node: node.start(timeout=90), (n1, n2)))
        yield n1, n2, eu, us
    finally:
        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(lambda n: n.stop() if n.proc is not None else 0, (n1, n2)))
        codes += [eu.stop(), us.stop()]
        for log in (n1.log(), n2.log(), eu.log(), us.log()):
            assert "Traceback" not in log, log
        assert codes == [0, 0, 0, 0], (codes, eu.log(), us.log())


async def _forged_pairs_counted(relay: Relay) -> None:
    """Call pairs published in a node's name, signed with a relay's own key or another key,
    admit nobody: the relay counts them on its /metrics (kind pair, forged)."""
    _id, relay_key, _public = parse_relay_key(
        Path(relay.env["CALLGATE_RELAY_KEY_FILE"]).read_text()
    )
    posing = ClusterSeal(relay_key)  # the relay's own key in the node key's place
    other = ClusterSeal(b"not-the-cluster-key-0123456789abcdef-xyz")
    pair = {"node": "n1", "pair": ["mallory", "bob"], "live": True}
    client = redis.Redis.from_url(relay.env["CALLGATE_REDIS_URL"])
    metrics = f"http://{relay.env['CALLGATE_METRICS']}/metrics"
    line = 'callgate_cluster_refused_total{kind="pair",reason="forged"}'

    def counted() -> bool:
        for seal in (posing, other):
            client.publish("callgate:pairs", seal.seal("pair", "", pair))
        with urllib.request.urlopen(metrics, timeout=5) as answer:
            text = answer.read().decode()
        return line in text and "callgate_turn_allocations_active" in text

    try:
        await wait_for(counted, 20, "forged pairs counted on the relay's /metrics")
    finally:
        client.close()


def _forge_registrations(url: str) -> None:
    """Relays registered by someone who can write to Redis but lacks the cluster key: one
    unsigned, one signed with another key. Neither may be handed to a client."""
    forged = {"region": "eu", "udp": [["127.0.0.1", 9]], "relay_ips": ["127.0.0.1"],
              "ports": [9, 9], "load": 0, "draining": False}  # fmt: skip
    other = ClusterSeal(b"not-the-cluster-key-0123456789abcdef-xyz")
    entries = {
        "evil": json.dumps({**forged, "id": "evil"}),
        "evil2": other.seal("relay", "evil2", {**forged, "id": "evil2"}),
    }
    client = redis.Redis.from_url(url)
    try:
        for relay_id, raw in entries.items():
            client.set(f"callgate:relay:{relay_id}", raw, ex=600)
    finally:
        client.close()


async def _inbound(session: CallSession) -> int:
    return sum(s["packets"] for s in await session.stats() if s["direction"] == "inbound")


async def _heard(session: CallSession, packets: int, within: float = 20) -> int:
    """Wait until the session has received more than `packets` packets; the count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (count := await _inbound(session)) <= packets:
        assert loop.time() < deadline, f"{count} packets heard in {within} s, expected > {packets}"
        await asyncio.sleep(0.1)
    return count


async def _pump(client: SignalingClient, session: CallSession) -> None:
    async for event in client.events():
        await session.handle(event)


async def _media_call(
    alice: SignalingClient, bob: SignalingClient, caller_hello: dict[str, Any]
) -> tuple[str, CallSession, CallSession, list[asyncio.Task[None]]]:
    """alice calls bob with tones; bob configures the call from `call.incoming`, as the CLI
    softphone does. Returns once both have media."""
    caller = CallSession(alice, caller_hello, tone=440)
    pumps = [asyncio.create_task(_pump(alice, caller))]
    call_id = await caller.invite("bob")
    incoming = await next_of(bob, "call.incoming", call_id, timeout=10)
    callee = CallSession(bob, call_hello(bob.hello, incoming), tone=880)
    pumps.append(asyncio.create_task(_pump(bob, callee)))
    await callee.accept(incoming)
    for session in (caller, callee):
        await asyncio.wait_for(session.connected.wait(), 30)
        await _heard(session, 20)  # the tone arrives, both ways
    return call_id, caller, callee, pumps


async def _end(caller: CallSession, callee: CallSession, pumps: list[asyncio.Task[None]]) -> None:
    await caller.hangup()
    await asyncio.wait_for(callee.ended.wait(), 10)
    for task in pumps:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    for session in (caller, callee):
        await session.close()


async def test_two_relays_chosen_drained_and_accounted(
    cluster: tuple[Serve, Serve, Relay, Relay], tmp_path: Path
) -> None:
    node, n2, eu, us = cluster
    db = node.database
    admin = await login(node, ADMIN)
    # both register; the forged registrations beside them (unsigned, another key) are ignored
    await wait_for(lambda: set(_registered(node, admin)) == {"eu", "us"}, 20, "both registered")
    assert "ignored the relay entry 'evil' in Redis: unsigned" in node.log()
    assert "ignored the relay entry 'evil2' in Redis: forged" in node.log()
    await _forged_pairs_counted(eu)
    async with connected(node, "alice", "laptop") as alice, connected(node, "bob", "desk") as bob:
        # region first: the node is in eu, so its clients get eu, then us (and never port 9)
        assert _turn_ports(alice.hello["ice_servers"]) == [eu.port, us.port], alice.hello

        # per call: alice's media uses us; bob is told us first for this call, and both relay
        call_id, caller, callee, pumps = await _media_call(alice, bob, _only(alice.hello, us))
        await _end(caller, callee, pumps)
        await final_cdr(db, call_id)

        def linked() -> dict[str, Any] | None:
            row = cdr_row(db, call_id)
            return row if row is not None and row["relay_bytes"] else None

        cdr = await wait_for(linked, 15, "the us relay's sessions linked to the CDR")
        low, high = us.relay_ports
        used = [a.rsplit(":", 1) for a in cdr["relay_used"].split(", ")]
        assert len(used) == 2 and all(low <= int(port) <= high for _, port in used), cdr
        sessions = relay_sessions(db, json.loads(cdr["relay_allocation_ids"]))
        assert sorted(s["user"] for s in sessions) == ["alice", "bob"], sessions
        assert {s["relay_id"] for s in sessions} == {"us"}, sessions
        assert (
            sum(s["bytes_to_peer"] + s["bytes_to_client"] for s in sessions) == cdr["relay_bytes"]
        )

        # a call on eu (both parties' first relay), then eu drained through the API mid-call
        call_id, caller, callee, pumps = await _media_call(alice, bob, alice.hello)
        status, body = http_json(f"{node.url}/api/relays/eu/drain", body={}, token=admin)
        assert (status, body) == (202, {"id": "eu", "draining": True}), body
        await wait_for(lambda: _registered(node, admin)["eu"]["draining"], 10, "eu draining")
        audit = cast(Table, AuditEntry.__table__)
        (entry,) = rows_of(db, audit, audit.c.action == "relay.drain")
        assert (entry["actor"], entry["object"]) == (ADMIN, "relay:eu"), entry
        async with connected(node, "carol", "desk") as carol:
            assert _turn_ports(carol.hello["ice_servers"]) == [us.port], carol.hello
        await _heard(callee, await _inbound(callee) + 20)  # the call on the draining relay goes on
        assert eu.proc is not None and eu.proc.poll() is None, "eu left while a call was on it"
        await _end(caller, callee, pumps)
        cdr = await final_cdr(db, call_id)
        assert cdr["reason"] == "hangup", cdr
        await asyncio.to_thread(eu.proc.wait, 30)  # drained: it exits by itself
        assert eu.proc.returncode == 0, eu.log()
        await wait_for(lambda: "eu" not in _registered(node, admin), 10, "eu gone")

    # a relay that stops beating is not handed out; beating again, it is
    assert us.proc is not None
    os.kill(us.proc.pid, signal.SIGSTOP)
    try:
        await wait_for(lambda: "us" not in _registered(node, admin), 20, "us expired")
        async with connected(node, "carol", "desk") as carol:
            assert us.port not in _turn_ports(carol.hello["ice_servers"]), carol.hello
    finally:
        os.kill(us.proc.pid, signal.SIGCONT)
    await wait_for(lambda: "us" in _registered(node, admin), 20, "us registered again")

    await _cli_reattaches(node, n2, admin, tmp_path)

    # `callgate turn --drain`: the us relay drains and exits; the command returns after it
    done = await asyncio.to_thread(
        callgate, "turn", "--drain", "--node-id", "us", "--redis-url",
        str(us.env["CALLGATE_REDIS_URL"]), timeout=60,
        CALLGATE_CLUSTER_KEY_FILE=node.env["CALLGATE_CLUSTER_KEY_FILE"],
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "drained and gone" in done.stdout, done.stdout
    assert await asyncio.to_thread(us.proc.wait, 30) == 0, us.log()
    unknown = await asyncio.to_thread(
        callgate, "turn", "--drain", "--node-id", "us", "--redis-url",
        str(us.env["CALLGATE_REDIS_URL"]),
        CALLGATE_CLUSTER_KEY_FILE=node.env["CALLGATE_CLUSTER_KEY_FILE"],
    )  # fmt: skip
    assert unknown.returncode == 1 and "no live relay 'us'" in unknown.stderr, unknown.stderr


async def _cli_reattaches(n1: Serve, n2: Serve, admin: str, tmp_path: Path) -> None:
    """`callgate call --server N1,N2` with its media on the us relay: `kill -9` of n1 mid-call;
    the softphone reconnects (n1 refused, then n2), re-attaches, n2 takes the call over, the
    call outlives the silence timeout there (its media goes on), and ends by the caller's
    hang-up (Ctrl-C): both CLIs exit 0; one record, held by n2, answered, hangup."""
    seen_bob: list[dict[str, Any]] = []
    seen_alice: list[dict[str, Any]] = []
    bob = await start_cli(n2, "bob", "answer", "--tone", "880", config_dir=tmp_path)
    alice = None
    try:
        await read_event(bob, "ready", 60, seen_bob)
        alice = await start_cli(
            n1, "alice", "call", "bob", "--tone", "440",
            "--server", f"{n1.url},{n2.url}", config_dir=tmp_path,
        )  # fmt: skip
        connected_ = await read_event(alice, "connected", 60, seen_alice)
        call_id = str(connected_["call_id"])
        # both parties' media reports are on record (a call taken over before then restarts
        # its setup: docs/scaling.md)
        await wait_for(
            lambda: (cdr_row(n1.database, call_id) or {}).get("media_path"), 15, "media on record"
        )
        n1.kill()
        n1.proc = None  # killed on purpose: the fixture does not stop it
        await read_event(alice, "reconnected", 30, seen_alice)
        reattached = await read_event(alice, "reattached", 60, seen_alice)
        assert reattached["state"] in ("connected", "media"), reattached  # answered, not ringing
        assert (cdr_row(n2.database, call_id) or {}).get("node_id") == "n2"

        # the media goes on: n2 keeps the call live past its silence timeout (stats every 2 s)
        def held() -> float:
            status, body = http_json(f"{n2.url}/api/live-calls", token=admin)
            assert status == 200, body
            calls = [c for c in body["calls"] if c["call_id"] == call_id]
            assert calls, f"the call ended on n2: {seen_alice}"
            return float(calls[0]["duration_s"])

        since = await asyncio.to_thread(held)
        await wait_for(lambda: held() > since + SILENCE_TIMEOUT + 2, 60, "held past silence", 0.5)
        alice.send_signal(signal.SIGINT)  # Ctrl-C: alice hangs up
        ended = await read_event(alice, "ended", 60, seen_alice)
        assert (ended["reason"], ended["ended_by"]) == ("hangup", "caller"), seen_alice
        assert await asyncio.wait_for(alice.wait(), 30) == 0, seen_alice
        assert await asyncio.wait_for(bob.wait(), 30) == 0, seen_bob
    finally:
        for process in (alice, bob):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    cdr = await final_cdr(n2.database, call_id)
    assert (cdr["node_id"], cdr["disposition"], cdr["reason"]) == ("n2", "answered", "hangup")
    assert cdr["duration_s"] > SILENCE_TIMEOUT, cdr  # held past it after the re-attach
    assert len(rows_of(n2.database, CALLS, CALLS.c.call_id == call_id)) == 1
