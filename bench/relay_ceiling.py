"""The relay's ceiling on one core: coturn `-m 1`, `callgate turn` (userspace) and `callgate turn
--fast-path required` (channel data forwarded by the kernel, turn/kernel) under the same ChannelData
load, in one run, on a rate ladder.

The load comes from the C harness in ../shared/perf (`blast.c`, `loadgen.py`): per simulated call a
UDP client allocates, binds channel 0x4000 to one echo peer and sends 176-byte ChannelData (G.711,
20 ms) at 50 pps; the peer echoes, so the relay receives and sends 2 x rate packets per second.
The harness is copied and compiled (gcc) into a temporary folder; nothing is written to the repo.

For each rate, each repetition runs every relay in turn (interleaved, so the other tenants of a
shared box weigh on all of them alike), each in a fresh process pinned to `--relay-cpu`, the load
generator pinned to `--gen-cpu`. Per run it records (from blast's JSON line):

  relayed pps    packets that came back through the relay per second, both directions;
  loss           fraction of sent packets not received, both directions;
  CPU us/pkt     the relay process's utime+stime (/proc/<pid>/stat) over the measurement window
                 divided by relayed packets (softirq work done in its context included);
  attr. us/pkt   CPU attributable to relaying: the relay process's CPU plus what the generator's
                 own CPU grew by against a run without any relay at the same rate (`direct`):
                 on loopback the kernel's work for a datagram, the fast path's included, runs
                 in the sender's context and is charged to it (this kernel has no
                 IRQ_TIME_ACCOUNTING). Softirq work deferred to ksoftirqd is not in it;
  p50/p99        one-way latency client->peer (CLOCK_MONOTONIC stamps in one process);
  others %       CPU busy on the box that is neither relay nor generator (other tenants).

A rate is *sustained* when the median over the repetitions has loss <= 0.1 %, one-way p50 <= 1 ms
and the generator really sent >= 99 % of the target. G.711 calls per core: the most simulated calls
(rate / 50) carried at < 0.1 % loss. A relay leaves the ladder after `--stop-after` unsustained
rates.

    .venv/bin/python bench/relay_ceiling.py --quick
    .venv/bin/python bench/relay_ceiling.py --rates 20000,30000,40000,50000,60000 --reps 3
    .venv/bin/python bench/relay_ceiling.py --servers callgate --rates 30000 --reps 5
    .venv/bin/python bench/relay_ceiling.py --servers coturn,callgate,callgate-fast --netns

--netns runs everything in a network namespace of its own (needs root), with
net.ipv4.conf.lo.forwarding=1 there, which the fast path needs (docs/relay-fast-path.md); the
host's loopback is left alone. `callgate-fast` needs it (or that sysctl on the host).

Needs gcc and Debian's coturn (`turnserver`); run as a user who may pin CPUs (taskset).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from serve_process import callgate_turn_command, free_port, free_relay_range

LOOPBACK = "127.0.0.1"
USER, PASSWORD, REALM = "bench", "bench-password", "bench"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PERF = ROOT.parent / "shared" / "perf"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Run:
    server: str
    rate: float
    rep: int
    sent_rate: float
    relayed_pps: float
    loss_pct: float
    us_per_pkt: float
    attributable_us: float
    relay_cpu_pct: float
    gen_cpu_pct: float
    others_pct: float
    p50_fwd_us: float
    p99_fwd_us: float
    p50_rev_us: float
    p99_rev_us: float


@dataclass
class Step:
    server: str
    rate: float
    runs: int
    relayed_pps: float
    loss_pct: float
    us_per_pkt: float
    us_per_pkt_min: float
    attributable_us: float
    p50_fwd_us: float
    p99_fwd_us: float
    others_pct: float
    sustained: bool


@contextlib.contextmanager
def own_netns(wanted: bool) -> Iterator[None]:
    """This process (its main thread, and so every child) in a fresh network namespace with lo up
    and lo forwarding on, deleted afterwards; nothing when not `wanted`."""
    if not wanted:
        yield
        return
    name = f"cgbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                sys.exit(f"setns {name}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(target)
        Path("/proc/sys/net/ipv4/conf/lo/forwarding").write_text("1")
        yield
    finally:
        _libc.setns(home, _CLONE_NEWNET)
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], check=False)


def build_harness(perf: Path, work: Path) -> Path:
    """Copy loadgen.py and blast.c from the shared harness into `work`, compile blast there."""
    for name in ("loadgen.py", "blast.c"):
        if not (perf / name).exists():
            sys.exit(f"{perf / name} not found: pass --perf DIR (the shared perf harness)")
        shutil.copy(perf / name, work / name)
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-pthread", "-o", str(work / "blast"), str(work / "blast.c")],
        check=True,
    )
    return work / "loadgen.py"


def coturn_command(port: int, low: int, high: int, log: Path) -> list[str]:
    return [
        "turnserver",
        "-n",
        f"--listening-ip={LOOPBACK}",
        f"--relay-ip={LOOPBACK}",
        f"--listening-port={port}",
        f"--min-port={low}",
        f"--max-port={high}",
        "--lt-cred-mech",
        f"--user={USER}:{PASSWORD}",
        f"--realm={REALM}",
        "--no-tls",
        "--no-dtls",
        "--no-tcp-relay",
        "--allow-loopback-peers",
        "--no-cli",
        f"--log-file={log}",
        "--simple-log",
        "--no-stdout-log",
        "-m",
        "1",
    ]


def answers_binding(port: int, timeout: float = 20.0) -> bool:
    """Poll with STUN Binding requests until the relay answers (startup under load is slow)."""
    request = struct.pack("!HHI", 1, 0, 0x2112A442) + os.urandom(12)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        while time.monotonic() < deadline:
            try:
                sock.sendto(request, (LOOPBACK, port))
                sock.recvfrom(1500)
                return True
            except OSError:
                time.sleep(0.2)
    return False


def start_relay(
    server: str, cpu: str, clients: int, work: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `server`: coturn, callgate, callgate-fast, or callgate@SRC (this venv's callgate
    with another source tree's `src` first on PYTHONPATH: a before/after in one run)."""
    port = free_port()
    low, high = free_relay_range(max(400, 2 * clients + 100))
    env = None
    if server == "coturn":
        command = coturn_command(port, low, high, work / "coturn.log")
    else:
        command = callgate_turn_command(port, low, high, realm=REALM, user=USER, password=PASSWORD)
        command += ["--fast-path", "required" if server == "callgate-fast" else "off"]
        if server.startswith("callgate@"):
            env = {**os.environ, "PYTHONPATH": server.partition("@")[2]}
    pin = ["taskset", "-c", cpu] if cpu else []
    log_name = server.replace("/", "_")
    with open(work / f"{log_name}.err", "ab") as errors:
        process = subprocess.Popen(pin + command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
    if not answers_binding(port):
        process.kill()
        process.wait()
        sys.exit(f"{server} did not answer on 127.0.0.1:{port} (see {work / log_name}.err)")
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def direct_baseline(rate: float, args: argparse.Namespace, loadgen: Path) -> tuple[float, float]:
    """The generator's own CPU (% of one CPU) and one-way p50 (us) at `rate` with no relay."""
    command = [sys.executable, str(loadgen), "--server", f"{LOOPBACK}:9", "--direct"]
    command += ["--rate", str(rate), "--duration", str(args.duration), "--warmup", str(args.warmup)]
    if args.gen_cpu:
        command = ["taskset", "-c", args.gen_cpu, *command]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"direct baseline failed: {out.stdout}{out.stderr}")
    r = json.loads(lines[-1])
    return float(r["gen_cpu_pct"]), float(r["lat_fwd_us"]["p50"])


def one_run(
    server: str, rate: float, rep: int, args: argparse.Namespace, loadgen: Path, direct: float
) -> Run:
    clients = int(-(-rate // 50))
    process, port = start_relay(server, args.relay_cpu, clients, loadgen.parent)
    try:
        command = [
            sys.executable,
            str(loadgen),
            "--server",
            f"{LOOPBACK}:{port}",
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--rate",
            str(rate),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--watch-pids",
            str(process.pid),
        ]
        if args.send_indications:
            command.append("--send-ind")
        if args.gen_cpu:
            command = ["taskset", "-c", args.gen_cpu, *command]
        out = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        stop(process)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"load generator failed against {server}: {out.stdout}{out.stderr}")
    r = json.loads(lines[-1])
    relayed = float(r["relayed_pps"])
    relay_cpu = float(r["relay_cpu_total_pct"])
    return Run(
        server=server,
        rate=rate,
        rep=rep,
        sent_rate=float(r["sent_rate"]),
        relayed_pps=relayed,
        loss_pct=100.0 * float(r["loss_total"]),
        us_per_pkt=10000.0 * relay_cpu / max(1.0, relayed),
        attributable_us=10000.0
        * (relay_cpu + max(0.0, float(r["gen_cpu_pct"]) - direct))
        / max(1.0, relayed),
        relay_cpu_pct=relay_cpu,
        gen_cpu_pct=float(r["gen_cpu_pct"]),
        others_pct=max(0.0, float(r["sys_busy_pct"]) - relay_cpu - float(r["gen_cpu_pct"])),
        p50_fwd_us=float(r["lat_fwd_us"]["p50"]),
        p99_fwd_us=float(r["lat_fwd_us"]["p99"]),
        p50_rev_us=float(r["lat_rev_us"]["p50"]),
        p99_rev_us=float(r["lat_rev_us"]["p99"]),
    )


def summarize(server: str, rate: float, runs: list[Run]) -> Step:
    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    step = Step(
        server=server,
        rate=rate,
        runs=len(runs),
        relayed_pps=med([r.relayed_pps for r in runs]),
        loss_pct=med([r.loss_pct for r in runs]),
        us_per_pkt=med([r.us_per_pkt for r in runs]),
        us_per_pkt_min=min(r.us_per_pkt for r in runs),
        attributable_us=med([r.attributable_us for r in runs]),
        p50_fwd_us=med([r.p50_fwd_us for r in runs]),
        p99_fwd_us=med([r.p99_fwd_us for r in runs]),
        others_pct=med([r.others_pct for r in runs]),
        sustained=False,
    )
    step.sustained = (
        step.loss_pct <= 0.1
        and step.p50_fwd_us <= 1000.0
        and med([r.sent_rate for r in runs]) >= 0.99 * rate
    )
    return step


def print_run(r: Run) -> None:
    print(
        f"  {r.server:9s} rate={r.rate:7.0f} rep={r.rep} relayed={r.relayed_pps:8.0f}/s "
        f"loss={r.loss_pct:7.3f}% cpu={r.us_per_pkt:5.2f}us/pkt ({r.relay_cpu_pct:5.1f}%) "
        f"attr={r.attributable_us:5.2f}us/pkt "
        f"p50/p99={r.p50_fwd_us:.0f}/{r.p99_fwd_us:.0f}us gen={r.gen_cpu_pct:.0f}% "
        f"others={r.others_pct:.0f}%",
        flush=True,
    )


def report(steps: list[Step], servers: list[str]) -> None:
    print()
    print(
        "relay          rate   relayed/s   loss %   CPU us/pkt (min)   attr. us/pkt   p50 us   "
        "p99 us   others %   ok"
    )
    for s in steps:
        print(
            f"{s.server:13s} {s.rate:6.0f} {s.relayed_pps:10.0f} {s.loss_pct:8.3f} "
            f"{s.us_per_pkt:9.2f} ({s.us_per_pkt_min:5.2f}) {s.attributable_us:12.2f} "
            f"{s.p50_fwd_us:8.0f} {s.p99_fwd_us:8.0f} "
            f"{s.others_pct:9.0f}   {'yes' if s.sustained else 'no'}"
        )
    print()
    best: dict[str, Step | None] = {}
    for server in servers:
        ok = [s for s in steps if s.server == server and s.sustained]
        best[server] = max(ok, key=lambda s: s.relayed_pps) if ok else None
        b = best[server]
        if b is None:
            print(f"{server}: no rate sustained (<= 0.1 % loss, p50 <= 1 ms)")
        else:
            print(
                f"{server}: max sustained {b.relayed_pps:.0f} relayed pps on one core, "
                f"{b.us_per_pkt:.2f} us relay CPU, {b.attributable_us:.2f} us attributable CPU "
                "per packet"
            )
        calls = [s.rate / 50 for s in steps if s.server == server and s.loss_pct < 0.1]
        print(
            f"{server}: {max(calls):.0f} concurrent G.711 calls on one core at < 0.1 % loss"
            if calls
            else f"{server}: no rate with < 0.1 % loss"
        )
    mine_all = [s for s in servers if s.startswith("callgate")]
    for mine in [s for s in mine_all if s != "callgate-fast"] if "coturn" in servers else []:
        common = sorted(
            {s.rate for s in steps if s.server == "coturn"}
            & {s.rate for s in steps if s.server == mine}
        )
        for rate in common:
            c = next(s for s in steps if s.server == "coturn" and s.rate == rate)
            g = next(s for s in steps if s.server == mine and s.rate == rate)
            print(
                f"at {2 * rate:.0f} relayed pps: CPU per packet coturn/{mine} = "
                f"{c.us_per_pkt / g.us_per_pkt:.2f} (median; of the lowest: "
                f"{c.us_per_pkt_min / g.us_per_pkt_min:.2f}; >= 1.0: callgate as cheap or cheaper)"
            )
    for mine in mine_all:
        c_best, g_best = best.get("coturn"), best.get(mine)
        if c_best is not None and g_best is not None:
            print(
                f"max sustained pps {mine}/coturn = "
                f"{g_best.relayed_pps / c_best.relayed_pps:.2f} (relays on one pinned core)"
            )
        theirs = {s.rate: s for s in steps if s.server == "coturn"}
        for step in [s for s in steps if s.server == mine and s.rate in theirs]:
            if step.attributable_us > 0:
                print(
                    f"at {2 * step.rate:.0f} relayed pps: attributable CPU per packet "
                    f"coturn/{mine} = {theirs[step.rate].attributable_us / step.attributable_us:.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perf", type=Path, default=DEFAULT_PERF, help="the shared perf harness")
    parser.add_argument("--servers", default="coturn,callgate")
    parser.add_argument("--rates", default="10000,20000,30000,40000,50000,60000,70000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--relay-cpu", default="1", help="taskset CPU list for the relay ('' = none)"
    )
    parser.add_argument("--gen-cpu", default="0", help="taskset CPU list for the load generator")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=2,
        help="unsustained rates before a relay leaves the ladder",
    )
    parser.add_argument(
        "--quick", action="store_true", help="rates 10000,20000,30000, 1 rep of 5 s"
    )
    parser.add_argument("--json", type=Path, help="also write every run and step here")
    parser.add_argument(
        "--send-indications",
        action="store_true",
        help="client->relay as STUN Send indications instead of ChannelData (peer->client stays "
        "ChannelData: the channel is bound)",
    )
    parser.add_argument(
        "--netns", action="store_true", help="run in a network namespace of its own (root)"
    )
    args = parser.parse_args()
    if args.quick:
        args.rates, args.reps, args.duration = "10000,20000,30000", 1, 5.0
    if shutil.which("turnserver") is None and "coturn" in args.servers:
        sys.exit("turnserver not found: apt-get install coturn")
    servers = [s for s in args.servers.split(",") if s]
    rates = [float(x) for x in args.rates.split(",")]
    runs: list[Run] = []
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="relay-ceiling-") as tmp, own_netns(args.netns):
        loadgen = build_harness(args.perf, Path(tmp))
        cpu_start = os.times()
        wall_start = time.monotonic()
        live = list(servers)
        failures = dict.fromkeys(servers, 0)
        for rate in rates:
            if not live:
                break
            print(
                f"rate {rate:.0f} client->relay pps ({2 * rate:.0f} relayed, {rate / 50:.0f} calls)"
            )
            by_server: dict[str, list[Run]] = {s: [] for s in live}
            direct, direct_p50 = direct_baseline(rate, args, loadgen)
            print(
                f"  direct (no relay): generator {direct:.1f} % of a CPU, one-way p50 "
                f"{direct_p50:.0f} us (a relay's added latency is its p50 minus this)"
            )
            for rep in range(args.reps):
                for server in live:
                    run = one_run(server, rate, rep, args, loadgen, direct)
                    print_run(run)
                    by_server[server].append(run)
                    runs.append(run)
            for server in list(live):
                step = summarize(server, rate, by_server[server])
                steps.append(step)
                if not step.sustained:
                    failures[server] += 1
                    if failures[server] >= args.stop_after:
                        live.remove(server)
        cpu = os.times()
        print(
            f"\nwall {time.monotonic() - wall_start:.0f} s; this script's own CPU "
            f"{cpu.user - cpu_start.user + cpu.system - cpu_start.system:.1f} s "
            f"(children, relays and generators: {cpu.children_user + cpu.children_system:.1f} s)"
        )
    report(steps, servers)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"runs": [asdict(r) for r in runs], "steps": [asdict(s) for s in steps]}, indent=1
            )
        )


if __name__ == "__main__":
    main()
