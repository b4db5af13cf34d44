"""Call attempts per signaling node, CPU per attempt, setup latency and memory per idle device.

Starts N `callgate serve` nodes on loopback on one database — the SQLite file of a temporary data
directory, or (`--backend postgresql`) a throwaway PostgreSQL server this script starts with
PostgreSQL's durable defaults (fsync, synchronous_commit on: a committed CDR is on disk) — then:

1. **Idle devices**: connects `--idle-devices` registered devices (one account and one raw
   WebSocket each, `hello` read), spread over the nodes, and reads each node's resident memory
   (VmRSS) before and after: (after - before) / devices is the memory one idle registered device
   costs a node. They stay connected through the load.
2. **Call attempts**: `--pairs` caller/callee pairs, spread over the nodes (a pair's two devices
   on the same node: calls across nodes need the Redis bus of issue 15, item 1), each looping for
   `--duration` s: call.invite → callee call.incoming → call.answer → caller call.answered →
   call.hangup → both call.ended (the loop of bench/signaling_load.py, no media).

Printed per node and in total: attempts/s, server CPU ms per attempt (utime+stime of the node's
process, all threads, over the window; the load generator and the database share the two cores,
so 1000 / (ms per attempt) is what one node could do per core on its own), PostgreSQL's own CPU
per attempt (all its processes) when used, setup latency p50/p99 (the caller's call.invite sent →
its call.answered received), and memory per idle device. Then the records check: one CDR per
attempt, every one finalized answered/hangup, three audit entries per attempt (call.invite,
call.answered, call.ended) and the audit chain verified from its first entry.

    .venv/bin/python bench/cluster_load.py                         # 1 node, SQLite, 100 pairs, 10 s
    .venv/bin/python bench/cluster_load.py --backend postgresql --nodes 2
    .venv/bin/python bench/cluster_load.py --pairs 0 --idle-devices 10000   # memory only
    .venv/bin/python bench/cluster_load.py --profile /tmp/prof     # py-spy --gil, window only
    .venv/bin/python bench/cluster_load.py --profile /tmp/prof --profile-waits  # where time goes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.db_backends (PostgreSQL)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import signaling_load
from lean_ws import open_lean_peer
from serve_process import CLK_TCK, CallgateServe
from signaling_load import PY_SPY, Peer, Stats, minimal_sdp, open_peer, pct, run_pair

TARGET_RATE = 1000.0  # attempts/s across two nodes on PostgreSQL (issue 15, item 4)
TARGET_CPU_MS = 1.0  # server CPU per attempt, one node on SQLite
TARGET_IDLE_BYTES = (1 << 30) / 10_000  # 10,000 idle devices in < 1 GiB
UNLIMITED = {"CALLGATE_CALLS__CALL_ATTEMPTS_PER_MINUTE": "10000"}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def system_cpu(pid: int) -> float:
    """stime of a process (all threads): the kernel's share of its CPU time, seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[12]) / CLK_TCK


def loop_thread_cpu(pid: int) -> float:
    """utime+stime of a process's main thread (the event loop's), seconds; the rest of its CPU
    is its other threads' (the records writer, the worker threads of `asyncio.to_thread`)."""
    text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu(root: int) -> float:
    """utime+stime of `root` and every process under it (PostgreSQL's backends), seconds."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(stat.parent.name)
        if pid == root or int(fields[1]) == root:  # postmaster's children are its backends
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


class Database:
    """The database the nodes share: a SQLite file (in node 1's data dir) or a PostgreSQL server."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.url: str | None = None
        self.pg: Any = None

    def __enter__(self) -> Database:
        if self.backend == "postgresql":
            from tests.db_backends import PgServer, pg_bindir

            bindir = pg_bindir()
            if bindir is None:
                sys.exit("PostgreSQL server programs not found (apt-get install postgresql)")
            self.pg = PgServer(bindir, durable=True).start()
            self.url = self.pg.new_database(None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pg is not None:
            self.pg.stop()

    def cpu(self) -> float:
        if self.pg is None:
            return 0.0
        pid = int((self.pg.root / "data" / "postmaster.pid").read_text().split()[0])
        return children_cpu(pid)


async def connect_idle(nodes: list[CallgateServe], handles: list[str]) -> list[Peer]:
    """One socket per idle device, round-robin over the nodes, 20 handshakes at a time."""
    gate = asyncio.Semaphore(20)
    tokens = nodes[0].tokens
    t0 = time.perf_counter()

    async def one(index: int, handle: str) -> Peer:
        async with gate:
            peer = await open_peer(nodes[index % len(nodes)].url, tokens[handle], "idle", 120)
        if (index + 1) % 2000 == 0:
            print(f"  {index + 1} idle devices, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return peer

    return list(await asyncio.gather(*(one(i, h) for i, h in enumerate(handles))))


def start_profiles(args: argparse.Namespace, nodes: list[CallgateServe]) -> list[Any]:
    if not args.profile:
        return []
    spy = args.py_spy or (PY_SPY if Path(PY_SPY).exists() else shutil.which("py-spy"))
    if spy is None:
        sys.exit("--profile needs py-spy (--py-spy PATH)")
    args.profile.mkdir(parents=True, exist_ok=True)
    seconds = str(max(1, int(args.duration) - 1))
    started = []
    for i, node in enumerate(nodes):
        out = str(args.profile / f"node{i + 1}.txt")
        mode = ["--idle", "--threads"] if args.profile_waits else ["--gil"]
        command = [spy, "record", "-p", str(node.pid), "-d", seconds, "-f", "raw", *mode,
                   "--rate", str(args.profile_rate), "--nonblocking", "-o", out]  # fmt: skip
        started.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return started


def records_check(url: str, data_dir: Path, attempts: int, wait: float = 15.0) -> dict[str, Any]:
    """CDR rows and audit entries against the attempts, and the audit chain verified (with the
    nodes' checkpoint key from the shared data directory)."""
    from sqlalchemy import text

    from callgate.records.audit import AuditLog, default_key_path, load_public_key
    from callgate.storage.db import open_store

    store = open_store(url)
    try:
        t0 = time.perf_counter()
        while True:
            with store.engine.connect() as conn:
                rows, final, answered = conn.execute(
                    text(
                        "SELECT count(*), "
                        "sum(CASE WHEN end_at IS NOT NULL AND disposition IS NOT NULL "
                        "AND reason IS NOT NULL THEN 1 ELSE 0 END), "
                        "sum(CASE WHEN disposition = 'answered' AND reason = 'hangup' "
                        "AND answer_at IS NOT NULL THEN 1 ELSE 0 END) FROM calls"
                    )
                ).one()
                audited = dict(
                    conn.execute(
                        text(
                            "SELECT action, count(*) FROM audit_entries "
                            "WHERE action LIKE 'call.%' GROUP BY action"
                        )
                    ).all()
                )
            if (rows >= attempts and final == rows) or time.perf_counter() - t0 > wait:
                break
            time.sleep(0.2)
        key = default_key_path(data_dir)
        verified = AuditLog(store).verify(load_public_key(key) if key.exists() else None)
    finally:
        store.close()
    return {
        "rows": rows,
        "final": final or 0,
        "answered_hangup": answered or 0,
        "audit": audited,
        "chain_ok": verified.ok,
        "chain_size": verified.size,
        "chain_problem": verified.problem,
    }


async def run(args: argparse.Namespace) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the nodes inherit it
    pairs = [(f"caller{i:04d}", f"callee{i:04d}") for i in range(args.pairs)]
    idle = [f"idle{i:05d}" for i in range(args.idle_devices)]
    users = {h: "" for pair in pairs for h in pair} | {h: "" for h in idle}
    with ExitStack() as stack:
        db = stack.enter_context(Database(args.backend))
        t_setup = time.perf_counter()
        first = CallgateServe(
            users,
            fast_users=True,
            keep=args.keep,
            extra_env=UNLIMITED,
            database_url=db.url,
            profile=args.cprofile,
        )
        nodes = [stack.enter_context(first)]
        for _ in range(1, args.nodes):
            node = CallgateServe(
                {}, extra_env=UNLIMITED, database_url=db.url, data_dir=first.data_dir
            )
            nodes.append(stack.enter_context(node))
        print(f"setup ({len(users)} users, {len(nodes)} node(s)): "
              f"{time.perf_counter() - t_setup:.1f} s", file=sys.stderr)  # fmt: skip
        url = db.url or f"sqlite:///{first.database}"

        # 1. idle registered devices and their memory
        rss0 = [rss_bytes(n.pid) for n in nodes]
        t_idle = time.perf_counter()
        idle_peers = await connect_idle(nodes, idle) if idle else []
        await asyncio.sleep(1.0)
        rss1 = [rss_bytes(n.pid) for n in nodes]
        idle_cpu = [0.0 for _ in nodes]
        if idle and args.idle_window:
            before = [n.cpu() for n in nodes]
            await asyncio.sleep(args.idle_window)
            idle_cpu = [n.cpu() - b for n, b in zip(nodes, before, strict=True)]
        print(f"idle devices connected: {len(idle_peers)} in "
              f"{time.perf_counter() - t_idle:.1f} s", file=sys.stderr)  # fmt: skip

        # 2. call attempts
        tokens = first.tokens
        opener = open_lean_peer if args.lean_client else open_peer
        peers = [
            (
                await opener(nodes[i % len(nodes)].url, tokens[a], "load"),
                await opener(nodes[i % len(nodes)].url, tokens[b], "load"),
            )
            for i, (a, b) in enumerate(pairs)
        ]
        sdp = (minimal_sdp(40000), minimal_sdp(40002))
        stats = [Stats() for _ in nodes]
        stop = asyncio.Event()
        budget = [10**12]
        profiles = start_profiles(args, nodes)
        cpu0 = [n.cpu() for n in nodes]
        sys0 = [system_cpu(n.pid) for n in nodes]
        main0 = [loop_thread_cpu(n.pid) for n in nodes]
        db0, me0, t0 = db.cpu(), time.process_time(), time.perf_counter()
        tasks = [
            asyncio.create_task(
                run_pair(caller, callee, b, sdp, stats[i % len(nodes)], stop, budget)
            )
            for i, ((caller, callee), (_, b)) in enumerate(zip(peers, pairs, strict=True))
        ]
        if tasks:
            await asyncio.sleep(args.duration)
        stop.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        cpu = [n.cpu() - c for n, c in zip(nodes, cpu0, strict=True)]
        kernel = [system_cpu(n.pid) - c for n, c in zip(nodes, sys0, strict=True)]
        main = [loop_thread_cpu(n.pid) - c for n, c in zip(nodes, main0, strict=True)]
        db_cpu, me = db.cpu() - db0, time.process_time() - me0
        for profile in profiles:
            profile.wait(60)
        for caller, callee in peers:
            await caller.ws.close()
            await callee.ws.close()
        attempts = sum(s.attempts for s in stats)
        check = await asyncio.to_thread(records_check, url, first.data_dir, attempts)
        for peer in idle_peers:
            await peer.ws.close()
        exits = [n.stop() for n in nodes]
    figures = {
        "backend": args.backend, "nodes": args.nodes, "pairs": args.pairs,
        "duration_s": args.duration, "wall_s": wall, "attempts": attempts,
        "per_node": [
            {"attempts": s.attempts, "completed": s.completed, "cpu_s": c, "system_cpu_s": k,
             "loop_thread_cpu_s": lt,
             "errors": sum(s.errors.values()), "idle_devices": len(idle[i :: len(nodes)]),
             "rss_before": r0, "rss_after_idle": r1}
            for i, (s, c, k, lt, r0, r1) in enumerate(
                zip(stats, cpu, kernel, main, rss0, rss1, strict=True)
            )
        ],
        "latency_ms": [x for s in stats for x in s.latencies], "db_cpu_s": db_cpu,
        "client_cpu_s": me, "check": check, "exits": exits,
        "idle_window_s": args.idle_window if idle else 0, "idle_cpu_s": idle_cpu,
    }  # fmt: skip
    ok = report(figures, [sample for s in stats for sample in s.samples])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.profile:
        summarize_profiles(args.profile, len(nodes), waits=args.profile_waits)
    return 0 if ok else 1


def report(f: dict[str, Any], samples: list[str]) -> bool:
    wall, attempts, per_node = f["wall_s"], f["attempts"], f["per_node"]
    lat = f["latency_ms"] or [float("nan")]
    print(f"\ncluster load: {f['nodes']} node(s) on {f['backend']}, {f['pairs']} pairs, "
          f"{f['duration_s']:g} s window, {wall:.2f} s wall")  # fmt: skip
    print(f"{'node':<6}{'attempts':>9}{'att/s':>8}{'CPU s':>8}{'CPU ms/att':>11}"
          f"{'alone/s/core':>13}{'errors':>7}{'idle dev':>9}{'RSS MiB':>14}{'per idle KiB':>13}")  # fmt: skip
    for i, n in enumerate(per_node, 1):
        ms = 1000 * n["cpu_s"] / n["attempts"] if n["attempts"] else float("nan")
        grown = n["rss_after_idle"] - n["rss_before"]
        per_idle = grown / n["idle_devices"] / 1024 if n["idle_devices"] else float("nan")
        rss = f"{n['rss_before'] / 2**20:.0f}→{n['rss_after_idle'] / 2**20:.0f}"
        print(f"{i:<6}{n['attempts']:>9}{n['attempts'] / wall:>8.0f}{n['cpu_s']:>8.2f}{ms:>11.2f}"
              f"{1000 / ms if ms else 0:>13.0f}{n['errors']:>7}{n['idle_devices']:>9}"
              f"{rss:>14}{per_idle:>13.1f}")  # fmt: skip
    cpu = sum(n["cpu_s"] for n in per_node)
    kernel = sum(n["system_cpu_s"] for n in per_node)
    loop_ms = 1000 * sum(n["loop_thread_cpu_s"] for n in per_node) / max(attempts, 1)
    ms = 1000 * cpu / attempts if attempts else float("nan")
    rate = attempts / wall
    idle = sum(n["idle_devices"] for n in per_node)
    grown = sum(n["rss_after_idle"] - n["rss_before"] for n in per_node)
    per_idle = grown / idle if idle else float("nan")
    rows: list[tuple[str, str]] = []
    if attempts:
        rows += [
            ("attempts/s (all nodes)", f"{rate:.0f}"),
            ("server CPU ms/attempt (all nodes)", f"{ms:.2f} "
             f"({100 * kernel / max(cpu, 1e-9):.0f} % in the kernel)"),
            ("  of which event-loop thread / others", f"{loop_ms:.2f} / {ms - loop_ms:.2f}"),
            ("setup p50 / p99 ms (invite→answered)", f"{pct(lat, 0.5):.1f} / {pct(lat, 0.99):.1f}"),
            ("load generator CPU ms/attempt", f"{1000 * f['client_cpu_s'] / attempts:.2f}"),
        ]  # fmt: skip
        if f["backend"] == "postgresql":
            rows.append(("PostgreSQL CPU ms/attempt", f"{1000 * f['db_cpu_s'] / attempts:.2f}"))
    if idle:
        rows.append(("memory per idle device", f"{per_idle / 1024:.1f} KiB "
                     f"(→ 10,000 devices: {10_000 * per_idle / 2**20:.0f} MiB)"))  # fmt: skip
    if f["idle_window_s"]:
        idle_pct = 100 * sum(f["idle_cpu_s"]) / f["idle_window_s"]
        rows.append(("idle devices' CPU (no calls)", f"{idle_pct:.1f} % of a core "
                     f"over {f['idle_window_s']:g} s"))  # fmt: skip
    for key, value in rows:
        print(f"{key:<38}{value}")
    c = f["check"]
    audit = c["audit"]
    per_call = [audit.get(a, 0) for a in ("call.invite", "call.answered", "call.ended")]
    cdr_ok = c["rows"] == attempts and c["final"] == c["rows"] == c["answered_hangup"]
    audit_ok = per_call == [attempts] * 3 and c["chain_ok"]
    errors = sum(n["errors"] for n in per_node)
    print(f"CDR: {c['rows']} rows, {c['final']} final, {c['answered_hangup']} answered/hangup "
          f"for {attempts} attempts: {'ok' if cdr_ok else 'MISMATCH'}")  # fmt: skip
    print(f"audit: invite/answered/ended {per_call}, chain of {c['chain_size']} entries "
          f"{'verified' if c['chain_ok'] else 'BROKEN: ' + str(c['chain_problem'])}: "
          f"{'ok' if audit_ok else 'MISMATCH'}")  # fmt: skip
    for sample in samples:
        print(f"  error sample: {sample}")
    if f["backend"] == "postgresql" and f["nodes"] >= 2:
        print(f"target ≥ {TARGET_RATE:.0f} attempts/s across the nodes: "
              f"{'ok' if rate >= TARGET_RATE else 'MISSED'}")  # fmt: skip
    if f["backend"] == "sqlite" and f["nodes"] == 1 and attempts:
        print(f"target ≤ {TARGET_CPU_MS:.1f} ms server CPU per attempt: "
              f"{'ok' if ms <= TARGET_CPU_MS else 'MISSED'}")  # fmt: skip
    if idle:
        print(f"target 10,000 idle devices < 1 GiB per node: "
              f"{'ok' if per_idle < TARGET_IDLE_BYTES else 'MISSED'} (measured {idle})")  # fmt: skip
    bad_exit = [e for e in f["exits"] if e not in (0, None)]
    if bad_exit:
        print(f"node exits: {f['exits']}")
    return cdr_ok and audit_ok and not errors and not bad_exit


def summarize_profiles(folder: Path, nodes: int, top: int = 25, waits: bool = False) -> None:
    """The functions holding the GIL most often (self samples) in each node's profile; with
    `waits`, per thread, the innermost callgate function and the leaf (where time goes, waits
    for the database and for the GIL included)."""
    for i in range(1, nodes + 1):
        path = folder / f"node{i}.txt"
        if not path.exists():
            print(f"profile {path}: missing (py-spy failed?)")
            continue
        own: dict[str, int] = {}
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            total += int(count)
            frames = stack.split(";")
            leaf = frames[-1]
            if waits:
                ours = [f for f in frames if "callgate/" in f]
                leaf = f"{frames[0].split(': ')[-1]}: {ours[-1] if ours else '-'} | {leaf}"
            own[leaf] = own.get(leaf, 0) + int(count)
        what = "samples, all threads, waits included" if waits else "samples with the GIL"
        print(f"\nprofile node {i} ({path}, {total} {what}), top self:")
        for leaf, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
            print(f"{100 * count / max(1, total):6.1f} %  {leaf}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--nodes", type=int, default=1, help="signaling nodes (default 1)")
    parser.add_argument("--pairs", type=int, default=100, help="caller/callee pairs, all nodes")
    parser.add_argument("--duration", type=float, default=10.0, help="timed window, s")
    parser.add_argument("--idle-devices", type=int, default=1000, help="idle devices, all nodes")
    parser.add_argument(
        "--idle-window", type=float, default=0.0,
        help="also measure the nodes' CPU for this many seconds with only the idle devices "
        "connected (signaling sockets' token checks run every 15 s)",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, help="folder for py-spy --gil profiles (raw)")
    parser.add_argument(
        "--profile-waits", action="store_true",
        help="with --profile: every thread, waiting included (not only who holds the GIL)",
    )  # fmt: skip
    parser.add_argument(
        "--cprofile", type=Path,
        help="run node 1 under cProfile (its event-loop thread; start-up included), stats here",
    )  # fmt: skip
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument("--py-spy", help=f"py-spy binary (default {PY_SPY})")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--keep", type=Path, help="use (and keep) this data directory")
    parser.add_argument(
        "--lean-client", action="store_true",
        help="the call pairs use bench/lean_ws.py's WebSocket client (less load-generator CPU; "
             "same frames and messages for the server)",
    )  # fmt: skip
    parser.add_argument(
        "--deflate", action="store_true",
        help="clients offer permessage-deflate (RFC 7692), as browsers do (default: they do not)",
    )  # fmt: skip
    args = parser.parse_args()
    signaling_load.OFFER_DEFLATE = args.deflate
    if args.nodes < 1 or min(args.pairs, args.idle_devices, args.idle_window) < 0:
        parser.error("--nodes ≥ 1; --pairs, --idle-devices, --idle-window ≥ 0")
    if args.duration <= 0:
        parser.error("--duration > 0")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    sys.exit(runner(run(args)))


if __name__ == "__main__":
    main()
