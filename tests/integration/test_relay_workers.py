"""`callgate turn --workers 2` in a subprocess: one relay in two processes (SO_REUSEPORT).

What a user of the relay would notice if the workers were two separate relays: quotas per user
and in all that let twice as many allocations through, a relayed address on the other worker
refused as an internal peer, a RESERVATION-TOKEN presented from another client port (so usually
to the other worker) refused, metrics that count half the allocations, and workers that outlive
the relay. Worker i relays from the i-th half of --relay-ports, which is how the test tells which
worker owns an allocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

from callgate.stun.constants import Attr, MessageClass
from tests.conftest import eventually
from tests.integration.test_cli import free_port, http_get, running
from tests.integration.turn_client import (
    TurnClient,
    error_code,
    parse_data_indication,
    reason_of,
    udp_client,
    xor_address,
)

LOW, HIGH = 61400, 61599  # worker 0 relays from 61400-61499, worker 1 from 61500-61599
PER_USER, TOTAL = 16, 24


def worker_of(relay: tuple[str, int]) -> int:
    assert LOW <= relay[1] <= HIGH, relay
    return (relay[1] - LOW) // ((HIGH - LOW + 1) // 2)


async def allocate(
    stack: contextlib.AsyncExitStack, port: int, user: str, *extra: tuple[int, bytes]
) -> tuple[TurnClient, tuple[str, int] | str]:
    """A new client (new source port) and its relayed address, or the 486 reason phrase."""
    client = await stack.enter_async_context(udp_client(("127.0.0.1", port)))
    client.username, client.password = user, f"{user}-password"
    response = await client.allocate(*extra)
    if response.cls is MessageClass.SUCCESS:
        return client, xor_address(response, Attr.XOR_RELAYED_ADDRESS)
    assert error_code(response) == 486, (error_code(response), reason_of(response))
    return client, reason_of(response) or ""


async def relays_between(sender: TurnClient, to: tuple[str, int], receiver: TurnClient, frm: tuple[str, int], channel: int) -> None:  # fmt: skip
    """`sender` reaches `receiver`'s relayed address `to` (on the other worker) over a channel;
    `receiver` (relayed address `frm` for the sender) gets the data as a Data indication from it
    once it has permitted the sender. A datagram sent before that permission is dropped if the
    receiver's worker reads it before the permission arrives, and relayed if after (RFC 8656 §9
    checks the permission when the datagram is processed): the relay socket and the listener are
    two sockets, and which one a loaded worker reads first is the scheduler's choice, so the test
    accepts either and insists only that nothing else, and nothing out of order, arrives. (That a
    datagram without any permission is dropped is tested without that race in
    tests/unit/turn/test_turn_handlers.py and tests/integration/test_turn_loopback.py. Between two allocations of one worker an early packet is held and delivered once
    permitted, allocation.py `from_peer`: hence the two workers.)"""
    ok = MessageClass.SUCCESS
    assert (await sender.create_permission(to)).cls is ok
    assert (await sender.channel_bind(channel, to)).cls is ok
    early, payload = os.urandom(160), os.urandom(160)
    sender.send_channel_data(channel, early)
    # The sender's worker reads its client's datagrams in order: once this answer is back, the
    # early datagram is waiting at `to` (or was already read there).
    assert (await sender.refresh(600)).cls is ok
    assert (await receiver.create_permission(frm)).cls is ok
    sender.send_channel_data(channel, payload)
    # loopback keeps order on one socket: the early datagram, if relayed, comes first
    first = parse_data_indication(await receiver.next_data())
    if first == (frm, early):
        first = parse_data_indication(await receiver.next_data())
    assert first == (frm, payload)


async def test_two_workers_are_one_relay(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    args = [
        "turn",
        "--workers",
        "2",
        "--listen",
        f"127.0.0.1:{port}",
        "--relay-ip",
        "127.0.0.1",
        "--relay-ports",
        f"{LOW}-{HIGH}",
        "--user",
        "alice:alice-password",
        "--user",
        "bob:bob-password",
        "--max-allocations-per-user",
        str(PER_USER),
        "--max-allocations",
        str(TOTAL),
        "--metrics",
        f"127.0.0.1:{metrics_port}",
    ]  # fmt: skip  (no --allow-peer: loopback peers stay refused)
    with running(args, tmp_path, port) as proc:
        # `running` saw a worker's "listening on"; the relay's own line comes once both are
        def started() -> re.Match[str] | None:
            log = (tmp_path / "server.log").read_text()
            return re.search(r"in 2 worker processes \(pids (\d+), (\d+)\)", log)

        await eventually(lambda: started() is not None, timeout=30, what="the relay's line")
        found = started()
        assert found is not None
        pids = [int(pid) for pid in found.groups()]
        async with contextlib.AsyncExitStack() as stack:
            # Quotas count both workers' allocations: alice's 16 are spread over both, and her
            # 17th is refused wherever it lands; bob then fills the server to 24 in all.
            alice = [await allocate(stack, port, "alice") for _ in range(PER_USER + 4)]
            bob = [await allocate(stack, port, "bob") for _ in range(TOTAL - PER_USER + 4)]
            granted = [(c, r) for c, r in alice + bob if isinstance(r, tuple)]
            refusals = [r for _, r in alice + bob if isinstance(r, str)]
            assert sum(isinstance(r, tuple) for _, r in alice) == PER_USER
            assert refusals.count(f"Allocation Quota Reached: {PER_USER} per user "
                                  "(max_allocations_per_user)") == 4  # fmt: skip
            assert (
                refusals.count(f"Allocation Quota Reached: server full (max_allocations {TOTAL})")
                == 4
            )
            # 24 allocations on one worker only would happen 1 time in 8 million
            by_worker = {w: [(c, r) for c, r in granted if worker_of(r) == w] for w in (0, 1)}
            assert by_worker[0] and by_worker[1]

            # Another worker's relayed address is a relay of this server: a permitted peer, and
            # data gets there, though 127.0.0.0/8 is refused as a peer.
            (x, x_relay), (y, y_relay) = by_worker[0][0], by_worker[1][0]
            await relays_between(x, y_relay, y, x_relay, 0x4000)
            refused = await x.create_permission(("127.0.0.1", free_port()))
            assert error_code(refused) == 403

            # A deallocation on either worker frees its slot for the whole relay.
            for client, _ in (by_worker[0][1], by_worker[1][1]):
                assert (await client.refresh(0)).cls is MessageClass.SUCCESS
            # EVEN-PORT with R on one worker; the token presented from a client port that the
            # other worker serves (found by allocating plainly and letting go) gets the port.
            prober = await stack.enter_async_context(udp_client(("127.0.0.1", port)))
            prober.username, prober.password = "bob", "bob-password"
            response = await prober.allocate((Attr.EVEN_PORT, b"\x80"))
            probe = xor_address(response, Attr.XOR_RELAYED_ADDRESS)
            token = response.get(Attr.RESERVATION_TOKEN)
            assert token is not None and probe[1] % 2 == 0
            for _ in range(40):
                taker, plain = await allocate(stack, port, "bob")
                assert isinstance(plain, tuple)
                assert (await taker.refresh(0)).cls is MessageClass.SUCCESS
                if worker_of(plain) != worker_of(probe):
                    break
            else:
                raise AssertionError("no client port reached the other worker in 40 tries")
            response = await taker.allocate((Attr.RESERVATION_TOKEN, token))
            assert response.cls is MessageClass.SUCCESS, reason_of(response)
            reserved = xor_address(response, Attr.XOR_RELAYED_ADDRESS)
            assert reserved == (probe[0], probe[1] + 1)
            # ...and the reserved port's traffic reaches the worker that took it
            # (from an allocation on the reserving worker, whose reservation socket may still
            # be open: the steering program sends the port's datagrams to the taker's)
            mate, mate_relay = by_worker[worker_of(probe)][2]
            await relays_between(mate, reserved, taker, mate_relay, 0x4001)

            # /metrics adds up both workers (each publishes once a second)
            def active() -> str:
                return http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1]

            await eventually(
                lambda: f"callgate_turn_allocations_active {TOTAL}.0" in active(),
                timeout=10,
                what="metrics count both workers' allocations",
            )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the relay"
    assert "alice-password" not in (tmp_path / "server.log").read_text()
