"""CPU of signing what nodes and relays exchange through Redis (runtime/cluster_seal.py,
runtime/node_envelope.py), beside the plain JSON encoding the bus did before, in one run.

    .venv/bin/python bench/cluster_seal.py [--messages 20000]

Per message between nodes (a `call.incoming` forwarded to a remote device, ~1.7 KB): wrap and
unwrap (HMAC-SHA256, replay window) against json.dumps / json.loads of the same message. Per
snapshot (Ed25519, once a second per node; every node and relay opens every other's) and per call
pair (Ed25519, once per invite while registered relays exist). CPU seconds (process time), so
the figures hold on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from callgate.runtime.cluster_seal import ClusterSeal
from callgate.runtime.node_envelope import NodeEnvelope

KEY = b"bench-node-key-0123456789abcdef0123456789"
MESSAGE = {
    "op": "send",
    "device": "d" * 32,
    "owner": "a",
    "msg": {"type": "call.incoming", "call_id": "c" * 32, "sdp": "v=0\r\n" * 200},
}
SNAPSHOT = {
    "calls": [{"call_id": "c" * 32, "caller": "alice", "callee": "bob"}] * 10,
    "presence": {f"user{i}": "online" for i in range(100)},
}


def cpu_us(count: int, work: Callable[[], Any]) -> float:
    """Microseconds of process CPU per call of `work`."""
    start = time.process_time()
    for _ in range(count):
        work()
    return 1e6 * (time.process_time() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    n = parser.parse_args().messages
    sender, receiver = NodeEnvelope(ClusterSeal(KEY), "a"), NodeEnvelope(ClusterSeal(KEY), "b")
    wrapped = iter([sender.wrap("b", MESSAGE) for _ in range(n)])
    plain = json.dumps(MESSAGE)
    seal = ClusterSeal(KEY)
    snapshot = seal.seal("snap", "a", SNAPSHOT)
    rows = [
        ("message: json.dumps (before)", cpu_us(n, lambda: json.dumps(MESSAGE))),
        ("message: wrap (sealed envelope)", cpu_us(n, lambda: sender.wrap("b", MESSAGE))),
        ("message: json.loads (before)", cpu_us(n, lambda: json.loads(plain))),
        ("message: unwrap (checked, once)", cpu_us(n, lambda: receiver.unwrap(next(wrapped)))),
        ("snapshot: seal (Ed25519)", cpu_us(n // 10, lambda: seal.seal("snap", "a", SNAPSHOT))),
        ("snapshot: open", cpu_us(n // 10, lambda: seal.open("snap", "a", snapshot, 15))),
        ("call pair: seal (Ed25519)", cpu_us(n // 10, lambda: seal.seal("pair", "", ["a", "b"]))),
    ]
    assert receiver.seal.refused == 0
    print(f"{'operation':<36}{'CPU µs':>10}   ({len(sender.wrap('b', MESSAGE))} B message)")
    for name, us in rows:
        print(f"{name:<36}{us:>10.1f}")


if __name__ == "__main__":
    main()
