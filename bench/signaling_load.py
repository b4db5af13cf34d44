"""Signaling-only call attempts per second through `callgate serve`, with the CDRs persisted.

Starts `callgate serve` on loopback (temporary data dir, SQLite, relay-only policy — the default),
creates 2 x P users on its data dir before it starts (in this process, through `AccountService`,
without passwords, each with a bearer token issued as `POST /api/login` would: no argon2 — sign-in
is not what this measures) and opens one raw WebSocket (`websockets`, no SDK) per user, all
before the timed window. Then P caller/callee pairs
run attempts back to back, each:

    caller → call.invite (minimal SDP, one relay candidate on the relay IP)
    callee ← call.incoming   → call.answer (minimal SDP)
    caller ← call.answered   → call.hangup
    both   ← call.ended (reason hangup)

for a fixed duration (or a fixed count), no media. It prints attempts/s, the invite → answered
latency (p50/p95/max: call.invite sent by the caller → call.answered received by it), errors, the
server process's CPU time per attempt (utime+stime from /proc/<pid>/stat over the window, all
threads — the load generator shares the machine's cores, so this is the figure that tells what
the server alone could sustain: 1 / (CPU per attempt) per core), and this process's own CPU.
Afterwards it reads the CDR table (`calls` in the data dir's SQLite, with sqlite3) and checks
that there is one row per attempt and that every row is finalized (end_at, disposition,
reason set; disposition answered, reason hangup).

    .venv/bin/python bench/signaling_load.py              # --quick (default): 50 pairs, 10 s
    .venv/bin/python bench/signaling_load.py --pairs 20 --duration 20
    .venv/bin/python bench/signaling_load.py --count 5000
    .venv/bin/python bench/signaling_load.py --profile /tmp/prof.txt   # py-spy raw, window only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from websockets.asyncio.client import ClientConnection, connect

from serve_process import CallgateServe

PASSWORD = "bench-password-1"
TARGET_RATE = 500.0
PY_SPY = "/tmp/probe-venv/bin/py-spy"


def minimal_sdp(port: int) -> str:
    """An audio offer/answer the relay-only filter keeps intact: one relay candidate on our
    relay IP, the default connection address 0.0.0.0."""
    return "\r\n".join([
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
        "a=rtpmap:111 opus/48000/2", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", "a=mid:0",
        f"a=candidate:1 1 udp 16777215 127.0.0.1 {port} typ relay raddr 0.0.0.0 rport 0",
        "a=end-of-candidates", "",
    ])  # fmt: skip


@dataclass
class Stats:
    attempts: int = 0  # invites sent in the window
    completed: int = 0  # attempts that went invite → answered → ended(hangup) on both sides
    latencies: list[float] = field(default_factory=list)  # invite sent → answered, ms
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(what)


class Peer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = 0

    async def send(self, type: str, **fields: Any) -> None:
        self.ids += 1
        await self.ws.send(json.dumps({"type": type, "id": f"m{self.ids}", **fields}))

    async def until(self, wanted: str, stats: Stats, timeout: float = 10.0) -> dict[str, Any]:
        """Read until a message of type `wanted`; `error` replies on the way are counted."""
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                kind = message["type"]
                if kind == wanted:
                    return message
                if kind == "error":
                    stats.error(f"error {message.get('code')}: {message.get('message')}")
                elif kind == "call.ended" and wanted != "call.ended":
                    stats.error(f"call.ended {message.get('reason')} while waiting for {wanted}")
                    raise RuntimeError("ended early")


async def run_pair(caller: Peer, callee: Peer, callee_handle: str, sdp: tuple[str, str],
                   stats: Stats, stop: asyncio.Event, budget: list[int]) -> None:  # fmt: skip
    offer, answer = sdp
    while not stop.is_set():
        if budget[0] <= 0:
            return
        budget[0] -= 1
        stats.attempts += 1
        try:
            t0 = time.perf_counter()
            await caller.send("call.invite", to=callee_handle, sdp=offer)
            incoming = await callee.until("call.incoming", stats)
            call_id = incoming["call_id"]
            await callee.send("call.answer", call_id=call_id, sdp=answer)
            await caller.until("call.answered", stats)
            stats.latencies.append((time.perf_counter() - t0) * 1000)
            await caller.send("call.hangup", call_id=call_id)
            ended = await caller.until("call.ended", stats)
            ended_b = await callee.until("call.ended", stats)
            if ended["reason"] != "hangup" or ended_b["reason"] != "hangup":
                stats.error(f"ended {ended['reason']}/{ended_b['reason']}")
            else:
                stats.completed += 1
        except (TimeoutError, RuntimeError) as exc:
            stats.error(f"attempt aborted: {type(exc).__name__} {exc}")
            await resync(caller, callee)


async def resync(*peers: Peer) -> None:
    """After a failed attempt, drop whatever is still in flight for these sockets."""
    for peer in peers:
        try:
            async with asyncio.timeout(0.5):
                while True:
                    await peer.ws.recv()
        except TimeoutError:
            pass


# `--deflate`: offer permessage-deflate (RFC 7692) as browsers do; off by default.
OFFER_DEFLATE = False


async def open_peer(url: str, token: str, device: str, open_timeout: float = 10.0) -> Peer:
    ws_url = url.replace("http://", "ws://") + f"/ws?token={token}&device={device}"
    compression = "deflate" if OFFER_DEFLATE else None
    ws = await connect(
        ws_url, compression=compression, max_size=2**20, proxy=None, open_timeout=open_timeout
    )
    hello = json.loads(await ws.recv())
    assert hello["type"] == "hello", hello
    return Peer(ws)


def cdr_check(database: Path, expected: int, wait: float = 15.0) -> dict[str, Any]:
    """Rows in `calls`, finalized rows, and how long until every row was final."""
    t0 = time.perf_counter()
    while True:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            rows, final, answered = db.execute(
                "SELECT count(*), "
                "sum(end_at IS NOT NULL AND disposition IS NOT NULL AND reason IS NOT NULL), "
                "sum(disposition = 'answered' AND reason = 'hangup' AND answer_at IS NOT NULL) "
                "FROM calls"
            ).fetchone()
            others = db.execute(
                "SELECT disposition, reason, count(*) FROM calls "
                "WHERE NOT (disposition = 'answered' AND reason = 'hangup') OR disposition IS NULL "
                "GROUP BY 1, 2"
            ).fetchall()
        if (rows >= expected and final == rows) or time.perf_counter() - t0 > wait:
            return {"rows": rows, "final": final or 0, "answered_hangup": answered or 0,
                    "other": others, "settle_s": time.perf_counter() - t0}  # fmt: skip
        time.sleep(0.1)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> int:
    handles = [(f"caller{i:03d}", f"callee{i:03d}") for i in range(args.pairs)]
    users = {h: PASSWORD for pair in handles for h in pair}
    t_setup = time.perf_counter()
    # Each caller places attempts back to back: the per-account limit (30 a minute) is lifted.
    unlimited = {"CALLGATE_CALLS__CALL_ATTEMPTS_PER_MINUTE": "10000"}
    with CallgateServe(users, fast_users=True, keep=args.keep, extra_env=unlimited) as serve:
        print(f"server: {' '.join(serve.command)}", file=sys.stderr)
        tokens = serve.tokens
        peers = {h: await open_peer(serve.url, tokens[h], "load") for h in users}
        print(f"setup (users, sign-in, sockets): {time.perf_counter() - t_setup:.1f} s",
              file=sys.stderr)  # fmt: skip
        relay_port = 40000
        sdp = (minimal_sdp(relay_port), minimal_sdp(relay_port + 2))
        stats = Stats()
        stop = asyncio.Event()
        budget = [args.count if args.count else 10**12]
        profiler = None
        if args.profile:
            spy = args.py_spy or (PY_SPY if Path(PY_SPY).exists() else shutil.which("py-spy"))
            if spy is None:
                sys.exit("--profile needs py-spy (--py-spy PATH)")
            seconds = max(1, int(args.duration or 10) - 1)
            profiler = subprocess.Popen(
                [spy, "record", "-p", str(serve.pid), "-d", str(seconds), "-f", "raw",
                 "-o", str(args.profile), *(["--nonblocking"] if args.nonblocking else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        cpu0, me0, t0 = serve.cpu(), time.process_time(), time.perf_counter()
        tasks = [
            asyncio.create_task(run_pair(peers[a], peers[b], b, sdp, stats, stop, budget))
            for a, b in handles
        ]
        if args.count:
            await asyncio.gather(*tasks)
        else:
            await asyncio.sleep(args.duration)
            stop.set()
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        cpu, me = serve.cpu() - cpu0, time.process_time() - me0
        if profiler is not None:
            _, err = profiler.communicate(timeout=60)
            if profiler.returncode != 0:
                print(f"py-spy failed: {err.strip()[-500:]}", file=sys.stderr)
        for peer in peers.values():
            await peer.ws.close()
        check = await asyncio.to_thread(cdr_check, serve.database, stats.attempts)
        exit_code = serve.stop()
    return report(args, stats, wall, cpu, me, check, exit_code)


def report(args: argparse.Namespace, stats: Stats, wall: float, cpu: float, me: float,
           check: dict[str, Any], exit_code: int | None) -> int:  # fmt: skip
    rate = stats.attempts / wall
    cpu_ms = 1000 * cpu / max(1, stats.attempts)
    lat = stats.latencies or [float("nan")]
    errors = sum(stats.errors.values())
    print(f"\nsignaling load: {args.pairs} caller/callee pairs, "
          f"{'count ' + str(args.count) if args.count else f'{args.duration:g} s'}")  # fmt: skip
    rows = [
        ("attempts", f"{stats.attempts}"),
        ("completed (answered, hung up)", f"{stats.completed}"),
        ("wall s", f"{wall:.2f}"),
        ("attempts/s", f"{rate:.0f}"),
        ("invite→answered p50 ms", f"{pct(lat, 0.5):.1f}"),
        ("invite→answered p95 ms", f"{pct(lat, 0.95):.1f}"),
        ("invite→answered max ms", f"{max(lat):.1f}"),
        ("errors", f"{errors}"),
        ("server CPU s (all threads)", f"{cpu:.2f} ({100 * cpu / wall:.0f} % of one core)"),
        ("server CPU ms/attempt", f"{cpu_ms:.2f}"),
        ("→ server-alone attempts/s/core", f"{1000 / cpu_ms:.0f}" if cpu_ms else "-"),
        ("load generator CPU s", f"{me:.2f} ({1000 * me / max(1, stats.attempts):.2f} ms/attempt)"),
        ("CDR rows / finalized", f"{check['rows']} / {check['final']}"),
        ("CDR answered+hangup", f"{check['answered_hangup']}"),
        ("CDR settle after window s", f"{check['settle_s']:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for sample in stats.samples:
        print(f"  error sample: {sample}")
    if check["other"]:
        print(f"  CDR rows not answered/hangup: {check['other']}")
    cdr_ok = check["rows"] == stats.attempts and check["final"] == check["rows"]
    print(f"CDR check: {'ok' if cdr_ok else 'MISMATCH'} (rows == attempts, all finalized)")
    print(f"target ≥ {TARGET_RATE:.0f} attempts/s: {'ok' if rate >= TARGET_RATE else 'MISSED'} "
          f"(measured, shared cores); server alone at {cpu_ms:.2f} ms CPU/attempt: "
          f"{'ok' if cpu_ms and 1000 / cpu_ms >= TARGET_RATE else 'MISSED'}")  # fmt: skip
    if exit_code not in (0, None):
        print(f"server exited with {exit_code}")
    if args.json:
        args.json.write_text(json.dumps({
            "pairs": args.pairs, "attempts": stats.attempts, "completed": stats.completed,
            "wall_s": wall, "attempts_per_s": rate, "latency_ms": stats.latencies,
            "p50_ms": pct(lat, .5), "p95_ms": pct(lat, .95), "errors": stats.errors,
            "server_cpu_s": cpu, "server_cpu_ms_per_attempt": cpu_ms, "client_cpu_s": me,
            "cdr": {k: v for k, v in check.items() if k != "other"},
            "mean_latency_ms": statistics.fmean(lat),
        }, indent=1))  # fmt: skip
    return 0 if cdr_ok and not errors and exit_code in (0, None) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 pairs for 10 s (the default)")
    parser.add_argument("--pairs", type=int, default=50, help="caller/callee pairs (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="timed window, s (default 10)")
    parser.add_argument("--count", type=int, help="stop after this many attempts instead")
    parser.add_argument(
        "--profile", type=Path, help="py-spy raw profile of the server, window only"
    )
    parser.add_argument("--py-spy", help=f"py-spy binary (default {PY_SPY})")
    parser.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--keep", type=Path, help="use (and keep) this data directory")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    sys.exit(runner(run(args)))


if __name__ == "__main__":
    main()
