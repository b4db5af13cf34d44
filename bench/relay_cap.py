"""The relay's per-packet cost under a bandwidth cap: this tree's `Allocation` beside an earlier
revision's (`--before`, by default the last one with turn/allocation.py's own `TokenBucket`), in
one run, in one process.

A capped allocation stays in userspace (the kernel fast path does not take it), so the bucket
runs on every packet it relays, both ways. Here one UDP allocation with a permission and channel
0x4000 to a peer, capped generously (nothing is dropped), relays N 172-byte packets each way per
round: `to_peer` (client → peer, what the listener's ChannelData handler calls) and `from_peer`
(peer → client, ChannelData to the client's socket). The sockets are stand-ins that count
(no syscalls), so the figure is the relay's Python per packet. Modes, interleaved per round:

  uncapped   no cap: the floor
  before     the earlier revision's Allocation, capped (its own TokenBucket, a clock read inside)
  after      this tree's Allocation, capped (callgate/rate.py's TokenBucket)

Figures: this thread's CPU (time.thread_time) and wall per packet, the lowest and the median of
the rounds.

    .venv/bin/python bench/relay_cap.py                       # 200,000 packets, 7 rounds
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from callgate.clock import SystemClock
from callgate.stun.constants import FAMILY_IPV4
from callgate.turn import allocation as after_module
from callgate.types import Address, FiveTuple, Transport

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "24cb7ad"  # main before the bandwidth cap used callgate/rate.py's TokenBucket
CLIENT: Address = ("127.0.0.1", 40000)
SERVER: Address = ("127.0.0.1", 3478)
PEER: Address = ("127.0.0.1", 50000)
RATE = 10**12  # bytes a second: nothing is ever dropped
PAYLOAD = bytes(172)


class Endpoint:
    """A relay socket that counts what it is given."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes | memoryview, peer: Address) -> None:
        self.sent += 1

    def set_dont_fragment(self) -> None:
        pass

    def close(self) -> None:
        pass


def load_before(revision: str) -> Any:
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:src/callgate/turn/allocation.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="relay-cap-")) / "allocation_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("allocation_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["allocation_before"] = module
    spec.loader.exec_module(module)
    return module


def allocation(mode: str, before: Any, clock: SystemClock) -> tuple[Any, Endpoint, list[int]]:
    module = before if mode == "before" else after_module
    to_client: list[int] = [0]

    def client_send(data: bytes | memoryview) -> None:
        to_client[0] += 1

    made = module.Allocation(
        FiveTuple(CLIENT, SERVER, Transport.UDP), "user", "user", b"k" * 16, client_send,
        False, clock.monotonic(),
    )  # fmt: skip
    relay = Endpoint()
    made.relays[FAMILY_IPV4] = relay
    made.permit(PEER[0], clock.monotonic() + 600)
    made.bind_channel(0x4000, PEER, clock.monotonic() + 600)
    if mode == "before":
        made.bucket = module.TokenBucket(RATE, clock.monotonic)
    elif mode == "after":
        made.cap(RATE, clock.monotonic)
    return made, relay, to_client


def one_round(mode: str, before: Any, count: int) -> tuple[float, float]:
    clock = SystemClock()  # as the server's handlers have it
    made, relay, to_client = allocation(mode, before, clock)
    frame = memoryview(bytearray(4 + len(PAYLOAD) + 4))
    frame[4 : 4 + len(PAYLOAD)] = PAYLOAD
    to_peer, from_peer = made.to_peer, made.from_peer
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(count):
        to_peer(PAYLOAD, PEER)
        from_peer(frame, len(PAYLOAD), PEER)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    if relay.sent != count or to_client[0] != count:
        raise SystemExit(f"{mode}: {relay.sent} to the peer, {to_client[0]} to the client")
    return 1e9 * cpu / (2 * count), 1e9 * wall / (2 * count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=200_000, help="each way, a round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", default=BEFORE, help="the reference revision")
    args = parser.parse_args()
    before = load_before(args.before)
    modes = ("uncapped", "before", "after")
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    wall: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            used, took = one_round(mode, before, args.packets)
            cpu[mode].append(used)
            wall[mode].append(took)
    print(f"{args.packets} packets each way a round, {args.rounds} rounds (before: {args.before})")
    print(f"{'mode':<9} {'ns/packet CPU min':>17} {'median':>7} {'wall min':>9}  cap costs")
    for mode in modes:
        extra = min(cpu[mode]) - min(cpu["uncapped"])
        print(f"{mode:<9} {min(cpu[mode]):>17.0f} {statistics.median(cpu[mode]):>7.0f} "
              f"{min(wall[mode]):>9.0f}  {'-' if mode == 'uncapped' else f'{extra:+.0f} ns'}")  # fmt: skip


if __name__ == "__main__":
    main()
