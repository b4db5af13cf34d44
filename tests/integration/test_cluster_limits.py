"""Trunk and dial-out limits shared by two nodes through a real Redis (runtime/cluster_limits.py):
two limiters, as two nodes hold them, share one trunk's channels, call rate and each user's
share; racing for the last channel, only one node gets it; a dead node's calls free their
channels when their leases expire, a live node's do not; Redis down refuses all but emergency
calls, and Redis back with its data lost gets the live calls back from the nodes' refresh."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from callgate.clock import ManualClock
from callgate.config import Settings
from callgate.runtime.cluster_limits import ClusterLimits, key
from callgate.runtime.sip import start_sip
from callgate.sip.credentials import CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.message import SipResponse
from callgate.sip.trunk_limits import LimitsUnavailable, TrunkLimited, TrunkLimits, UserLimit
from callgate.sip.trunks import Trunk, Trunks
from callgate.storage.db import open_store, sqlite_url
from tests.integration.sip_client import SipClient
from tests.redis_server import RedisServer


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    yield client
    await client.aclose()


def node(redis: Redis, name: str, clock: ManualClock) -> TrunkLimits:
    """A node's limits: its own counters, the cluster's decisions (no refresh task: the test
    beats for it, so a node "dies" by no longer beating)."""
    return TrunkLimits(clock, ClusterLimits(redis, name, clock=clock, lease_s=15.0))


def shared(limits: TrunkLimits) -> ClusterLimits:
    assert isinstance(limits.shared, ClusterLimits)
    return limits.shared


async def test_two_nodes_share_a_trunks_channels_rate_and_users_shares(redis: Redis) -> None:
    clock = ManualClock()
    a, b = node(redis, "a", clock), node(redis, "b", clock)
    # channels: two on the trunk, for the whole cluster
    assert await a.admit("a1", "uk", 2, None, "outbound") is None
    assert await b.admit("b1", "uk", 2, None, "inbound") is None
    full = await b.admit("b2", "uk", 2, None, "outbound")
    assert full is not None and (full.status, full.limit) == (486, "calls")
    assert b.refused[("uk", "calls")] == 1 and a.active["uk"] == b.active["uk"] == 1
    # an emergency call is never refused, and takes a channel too
    assert await b.admit("b3", "uk", 2, None, "outbound", emergency=True) is None
    a.release("uk", lease="a1")
    await shared(a).beat()
    assert await b.admit("b4", "uk", 2, None, "outbound") is not None  # b1 and b3 still up
    b.release("uk", lease="b3")
    await shared(b).beat()
    assert await a.admit("a2", "uk", 2, None, "outbound") is None

    # attempts a second: a burst of two for the cluster, then one more after half a second
    assert await a.admit("a3", "us", None, 2.0, "outbound") is None
    assert await b.admit("b5", "us", None, 2.0, "outbound") is None
    fast = await a.admit("a4", "us", None, 2.0, "outbound")
    assert fast is not None and TrunkLimited(fast).headers == [("Retry-After", "1")]
    clock.advance(0.5)
    assert await b.admit("b6", "us", None, 2.0, "outbound") is None

    # a user's share: one call at once and three an hour, wherever she dials from
    alice, bob = UserLimit("alice", 1, 3), UserLimit("bob", 1, 3)
    assert await a.admit("a5", "fr", 30, None, "outbound", user=alice) is None
    busy = await b.admit("b7", "fr", 30, None, "outbound", user=alice)
    assert busy is not None and (busy.status, busy.limit) == (403, "user-calls")
    assert await b.admit("b8", "fr", 30, None, "outbound", user=bob) is None
    assert await b.admit("b9", "fr", 30, None, "outbound", emergency=True, user=alice) is None
    a.release("fr", "alice", "a5")
    await shared(a).beat()
    clock.advance(600)
    assert await b.admit("b10", "fr", 30, None, "outbound", user=alice) is None
    b.release("fr", "alice", "b10")
    await shared(b).beat()
    assert await a.admit("a6", "fr", 30, None, "outbound", user=alice) is None  # her third
    a.release("fr", "alice", "a6")
    await shared(a).beat()
    hourly = await b.admit("b11", "fr", 30, None, "outbound", user=alice)
    # her first call of the hour leaves the window 3000 s from now
    assert hourly is not None and (hourly.status, hourly.limit) == (503, "user-hour")
    assert TrunkLimited(hourly).headers == [("Retry-After", "3000")]
    clock.advance(3000)
    assert await b.admit("b12", "fr", 30, None, "outbound", user=alice) is None


async def test_racing_nodes_never_both_take_the_last_channel(redis: Redis) -> None:
    clock = ManualClock()
    a, b = node(redis, "a", clock), node(redis, "b", clock)
    attempts = [(a if i % 2 else b).admit(f"c{i}", "uk", 3, None, "outbound") for i in range(20)]
    answers = await asyncio.gather(*attempts)
    assert sum(answer is None for answer in answers) == 3
    assert a.active["uk"] + b.active["uk"] == 3


async def test_a_dead_nodes_calls_free_their_channels_after_the_lease(redis: Redis) -> None:
    clock = ManualClock()
    a, b = node(redis, "a", clock), node(redis, "b", clock)
    assert await a.admit("a1", "uk", 1, None, "outbound") is None
    clock.advance(10)
    await shared(a).beat()  # alive: its lease now ends 15 s from here
    clock.advance(10)
    assert await b.admit("b1", "uk", 1, None, "outbound") is not None  # 20 s: a still holds it
    # a dies: no more refreshes. Its call's channel is free once the lease runs out
    clock.advance(4)
    assert await b.admit("b2", "uk", 1, None, "outbound") is not None
    clock.advance(1.5)
    assert await b.admit("b3", "uk", 1, None, "outbound") is None


async def test_redis_down_refuses_all_but_emergency_calls_and_recovers(
    redis: Redis, redis_server: RedisServer
) -> None:
    clock = ManualClock()
    a, b = node(redis, "a", clock), node(redis, "b", clock)
    assert await a.admit("a1", "uk", 1, None, "outbound") is None
    redis_server.stop()
    down = await b.admit("b1", "uk", 30, None, "outbound", user=UserLimit("bob", 3, 100))
    assert down is not None and (down.status, down.limit) == (503, "unavailable")
    assert down.reason == "Service Unavailable (call limits unreachable: cluster store down)"
    assert TrunkLimited(down).cdr == ("failed", "setup-failed")
    assert TrunkLimited(down).headers == [("Retry-After", "1")]
    assert b.refused[("uk", "unavailable")] == 1
    assert await b.admit("b2", "uk", 1, None, "outbound", emergency=True) is None
    # Redis back, empty (no persistence): a's beat puts its live call back
    redis_server.start()
    clock.advance(1)

    async def beat() -> None:
        for _ in range(50):
            try:
                await shared(a).beat()
                return
            except (RedisError, OSError):  # reconnecting
                await asyncio.sleep(0.1)
        await shared(a).beat()

    await beat()
    assert await b.admit("b3", "uk", 1, None, "outbound") is not None
    a.release("uk", lease="a1")
    await shared(a).beat()
    assert await b.admit("b4", "uk", 1, None, "outbound") is None


async def test_by_redis_time_with_the_refresh_task(acl_redis_server: RedisServer) -> None:
    """As `serve` runs it: Redis's clock, the node's own refresh task, releases applied by it;
    as deploy/redis-users.acl's node user (scripts allowed), whom a relay's user cannot play."""
    node_user = Redis.from_url(acl_redis_server.user_url("callgate-node"))
    relay_user = Redis.from_url(acl_redis_server.user_url("callgate-relay-eu1"))
    limits = ClusterLimits(node_user, "a")
    other = ClusterLimits(node_user, "b")
    await limits.start()
    try:
        with pytest.raises(LimitsUnavailable):
            await ClusterLimits(relay_user, "r").take("r", "uk", 1, None, None, False)
        assert await limits.take("x", "uk", 1, 1.0, UserLimit("alice", 1, 10), False) is None
        assert await other.take("y", "uk", 1, None, None, False) is not None
        assert limits.holding() == 1
        limits.release("x")
        for _ in range(200):  # the task removes it at once, not at its next beat
            if await other.take("z", "uk", 1, None, None, False) is None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the released channel was never given back")
    finally:
        await limits.stop()
        await node_user.aclose()
        await relay_user.aclose()


class Answering:
    """A call handler that answers each call and holds it until it ends."""

    async def invite(self, call: InboundCall) -> None:
        sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        call.accept(sdp + b"m=audio 40000 RTP/AVP 0\r\n", "sip:callgate@127.0.0.1")
        await call.ended.wait()


async def test_two_edges_share_a_trunk_over_sip(
    tmp_path: Path, redis: Redis, redis_server: RedisServer
) -> None:
    """Two nodes' SIP edges, one trunk of one channel: a call dialled out on node a keeps the
    carrier's INVITE to node b out (486); given back, b takes the next; Redis down, a node
    refuses a dial-out and an inbound call (503) but puts an emergency call through."""
    store = open_store(sqlite_url(tmp_path))
    carrier_out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier_out.bind(("127.0.0.2", 0))
    trunk = Trunk("uk", frozenset({"127.0.0.2"}), outbound=carrier_out.getsockname(), max_calls=1)
    edges: list[SipEdge] = []
    try:
        for name in ("a", "b"):
            edge = SipEdge(CredentialStore(store, "callgate.test"), trunks=Trunks([trunk]))
            limits = ClusterLimits(redis, name)
            edge.trunk_limits.shared = limits
            await limits.start()
            edge.closing.append(limits.stop)
            edge.take_calls(Answering())
            await edge.start(udp=[("127.0.0.1", 0)])
            edges.append(edge)
        a, b = edges
        port_b = b.bound[0][1][1]

        def invite_b() -> SipResponse:
            carrier = SipClient(("127.0.0.1", port_b), bind="127.0.0.2")
            try:
                did = f"sip:+442079460000@127.0.0.1:{port_b}"
                reply = carrier.exchange(carrier.request("INVITE", "sip:+15550100@carrier", to=did))
                while reply.status < 200:
                    reply = carrier.receive()
                return reply
            finally:
                carrier.close()

        out = await a.dial(trunk, "+442079460001", "alice", user="alice")
        assert out is not None and a.trunk_limits.active["uk"] == 1
        busy = await asyncio.to_thread(invite_b)
        assert (busy.status, busy.reason) == (486, "Busy Here (all trunk channels in use)")
        assert b.trunk_limits.refused[("uk", "calls")] == 1
        with pytest.raises(TrunkLimited) as full:
            await b.dial(trunk, "+442079460002", "bob", user="bob")
        assert full.value.refusal.status == 486
        a.forget(out.call_id)  # the call ended on a: its channel is the cluster's again
        for _ in range(200):
            taken = await b.trunk_limits.admit("probe", "uk", 1, None, "outbound")
            if taken is None:
                b.trunk_limits.release("uk", lease="probe")
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("node a's call never gave its channel back")
        await shared(b.trunk_limits).beat()  # the probe given back
        answered = await asyncio.to_thread(invite_b)
        assert answered.status == 200

        redis_server.stop()
        with pytest.raises(TrunkLimited) as down:
            await a.dial(trunk, "+442079460003", "alice", user="alice")
        assert (down.value.refusal.status, down.value.cdr) == (503, ("failed", "setup-failed"))
        assert await a.dial(trunk, "999", "alice", emergency=True, user="alice") is not None
    finally:
        for edge in edges:
            await edge.close()
        carrier_out.close()
        store.close()


async def test_serve_shares_the_limits_when_redis_is_configured(
    tmp_path: Path, redis: Redis
) -> None:
    """`serve`'s SIP edge (runtime/sip.py): with Redis, the cluster's limits, refreshed by the
    node and given back at close; without, the node's own, as on one node."""
    trunk = {"name": "uk", "addresses": ["127.0.0.2"], "outbound": "127.0.0.2:5060"}
    settings = Settings(
        data_dir=tmp_path, node_id="a", sip={"listen": ["127.0.0.1:0"], "trunks": [trunk]}
    )
    store = open_store(sqlite_url(tmp_path))
    try:
        alone = await start_sip(settings, store)
        assert alone is not None and alone.trunk_limits.shared is None
        await alone.close()
        edge = await start_sip(settings, store, redis=redis)
        assert edge is not None and isinstance(edge.trunk_limits.shared, ClusterLimits)
        try:
            out = await edge.dial(edge.trunks.all[0], "+442079460000", "alice", user="alice")
            assert out is not None
            assert await redis.zcard(key("calls", "uk")) == 1
            assert await redis.zcard(key("user-calls", "uk", "alice")) == 1
        finally:
            await edge.close()  # gives the lease back
        assert await redis.zcard(key("calls", "uk")) == 0
    finally:
        store.close()
