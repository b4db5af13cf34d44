"""What a dial-out's trunk limits cost: one node's own (in-process) against the cluster's (one Lua
script in Redis, runtime/cluster_limits.py), side by side in one run.

Starts a private `redis-server` on 127.0.0.1 (Debian's, as the tests do), then admits and gives
back N calls through one trunk with per-user limits (admission + release, as a dial-out and its
hang-up), one at a time, and reports wall time and this process's CPU per admission (Redis's own
CPU is read from `INFO cpu` before and after). Then N admissions from two limiters (two nodes)
racing for a trunk of 30 channels: exactly 30 admitted each round.

    .venv/bin/python bench/trunk_limits.py
    .venv/bin/python bench/trunk_limits.py --calls 20000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

from redis.asyncio import Redis

from callgate.clock import SystemClock
from callgate.runtime.cluster_limits import ClusterLimits
from callgate.sip.trunk_limits import TrunkLimits, UserLimit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def redis_cpu(redis: Redis) -> float:
    info: dict[str, Any] = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def one_by_one(limits: TrunkLimits, calls: int) -> tuple[float, float]:
    """Seconds of wall and of this process's CPU for `calls` admissions and releases."""
    users = [UserLimit(f"u{i}", 3, 1_000_000) for i in range(100)]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        lease = f"c{i}"
        assert await limits.admit(lease, "uk", 30, None, "outbound", user=users[i % 100]) is None
        limits.release("uk", users[i % 100].handle, lease)
    return time.perf_counter() - wall, time.process_time() - cpu


async def main(calls: int) -> None:
    program = shutil.which("redis-server")
    if program is None:
        raise SystemExit("redis-server not found (Debian: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as root:
        args = [program, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", root]  # fmt: skip
        server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            redis = Redis(host="127.0.0.1", port=port)
            for _ in range(100):
                try:
                    await redis.ping()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            await run(redis, calls)
            await redis.aclose()
        finally:
            server.kill()
            server.wait(10)


async def run(redis: Redis, calls: int) -> None:
    local = TrunkLimits(SystemClock())
    wall, cpu = await one_by_one(local, calls)
    print(f"{calls} dial-outs, admission + release, one at a time")
    print(f"  in-process (one node): {wall / calls * 1e6:8.1f} µs wall, "
          f"{cpu / calls * 1e6:8.1f} µs CPU each")  # fmt: skip
    shared = ClusterLimits(redis, "a")
    await shared.start()
    before = await redis_cpu(redis)
    wall, cpu = await one_by_one(TrunkLimits(SystemClock(), shared), calls)
    used = await redis_cpu(redis) - before
    await shared.stop()
    print(f"  Redis (cluster):       {wall / calls * 1e6:8.1f} µs wall, "
          f"{cpu / calls * 1e6:8.1f} µs CPU each here + {used / calls * 1e6:.1f} µs in "
          f"redis-server (releases batched by the refresh task)")  # fmt: skip

    a = TrunkLimits(SystemClock(), ClusterLimits(redis, "a"))
    b = TrunkLimits(SystemClock(), ClusterLimits(redis, "b"))
    rounds, admitted = max(1, calls // 100), []
    for r in range(rounds):
        answers = await asyncio.gather(
            *((a if i % 2 else b).admit(f"r{r}-{i}", f"t{r}", 30, None, "outbound")
              for i in range(100))
        )  # fmt: skip
        admitted.append(sum(answer is None for answer in answers))
    print(f"two nodes racing, {rounds} rounds of 100 admissions for 30 channels: "
          f"admitted {min(admitted)}-{max(admitted)} a round (30 expected)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    asyncio.run(main(parser.parse_args().calls))
