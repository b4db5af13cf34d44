"""Same turnutils_uclient load against coturn's turnserver and `callgate turn`, side by side.

For each relay: start it on 127.0.0.1 (loopback peers allowed, one static user, no TLS/DTLS/CLI,
its own relay port range), start a turnutils_peer echo, run turnutils_uclient, and measure

  * echoes/s    messages that came back per second while traffic flowed (from uclient's
                once-a-second progress lines, timestamped as they are printed);
  * loss        uclient's "Total lost packets" and "total send dropped";
  * RTT         uclient's "Average round trip delay" (ms, integer-ms samples);
  * CPU/echo    the relay process's utime+stime (/proc/<pid>/stat, all threads) over the uclient
                run, divided by the echoes received (an echo is two relayed packets).

Then print both and the ratio callgate/coturn. `--quick` (the default) finishes in < 60 s;
`--heavy` sends as fast as uclient can (-z 0) from more clients.

    .venv/bin/python bench/turn_vs_coturn.py            # quick, UDP, channels
    .venv/bin/python bench/turn_vs_coturn.py --heavy
    .venv/bin/python bench/turn_vs_coturn.py --transport tcp --send-indications
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from serve_process import callgate_turn_command, free_port

LOOPBACK = "127.0.0.1"
REALM = "bench"
USER = "bench"
PASSWORD = "bench-password"
CLK_TCK = os.sysconf("SC_CLK_TCK")

PRESETS = {
    "quick": {"clients": 50, "messages": 200, "interval": 20, "length": 100},
    "heavy": {"clients": 100, "messages": 2000, "interval": 0, "length": 172},
}


@dataclass
class Result:
    server: str
    command: list[str]
    uclient: list[str]
    sent: int = 0
    received: int = 0
    lost: int = 0
    lost_percent: float = 0.0
    send_dropped: int = 0
    rtt_ms: float = 0.0
    rtt_max_ms: int = 0
    echoes_per_s: float = 0.0
    flow_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cpu_us_per_echo: float = 0.0
    wall_seconds: float = 0.0
    udp_rcvbuf_errors: int = 0
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} not found: install Debian's coturn package (apt-get install coturn)")
    return path


def free_udp_pair() -> int:
    """An even port P with P and P+1 free over UDP (turnutils_peer echoes on both)."""
    while True:
        port = random.randrange(20000, 32000, 2)
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind((LOOPBACK, port))
                b.bind((LOOPBACK, port + 1))
        except OSError:
            continue
        return port


def relay_range(size: int) -> tuple[int, int]:
    start = random.randrange(10000, 32768 - size, 2)
    return start, start + size - 1


def binding_ok(port: int, tcp: bool) -> bool:
    tid = os.urandom(12)
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, tid)
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    try:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(0.2)
            sock.connect((LOOPBACK, port))
            sock.sendall(request)
            answer = sock.recv(2048)
    except OSError:
        return False
    return answer[:2] == b"\x01\x01" and answer[8:20] == tid


def wait_ready(process: subprocess.Popen[bytes], port: int, what: str) -> None:
    deadline = time.monotonic() + 15
    while not (binding_ok(port, tcp=False) and binding_ok(port, tcp=True)):
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode} before answering STUN")
        if time.monotonic() > deadline:
            process.kill()
            sys.exit(f"{what} did not answer STUN on 127.0.0.1:{port} within 15 s")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped for full socket receive buffers (host-wide, /proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("RcvbufErrors")])


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


def coturn_command(port: int, low: int, high: int, log: Path, threads: int | None) -> list[str]:
    command = [
        binary("turnserver"),
        "-n",
        "--listening-ip",
        LOOPBACK,
        "--listening-port",
        str(port),
        "--relay-ip",
        LOOPBACK,
        "--min-port",
        str(low),
        "--max-port",
        str(high),
        "--lt-cred-mech",
        "--user",
        f"{USER}:{PASSWORD}",
        "--realm",
        REALM,
        "--allow-loopback-peers",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--log-file",
        str(log),
        "--simple-log",
    ]
    if threads is not None:
        command += ["--relay-threads", str(threads)]
    return command


def uclient_command(args: argparse.Namespace, server_port: int, peer_port: int) -> list[str]:
    command = [binary("turnutils_uclient")]
    if args.transport == "tcp":
        command.append("-t")
    if args.send_indications:
        command.append("-s")
    command += [
        "-m",
        str(args.clients),
        "-n",
        str(args.messages),
        "-z",
        str(args.interval),
        "-l",
        str(args.length),
        "-L",
        LOOPBACK,
        "-e",
        LOOPBACK,
        "-r",
        str(peer_port),
        "-u",
        USER,
        "-w",
        PASSWORD,
        "-p",
        str(server_port),
        LOOPBACK,
    ]
    return command


PROGRESS = re.compile(r"start_mclient: msz=\d+, tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")


def run_uclient(command: list[str], timeout: float) -> tuple[str, list[tuple[float, int]], float]:
    """Run uclient; return its output, (arrival time, received so far) per progress line, wall s."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    lines: list[str] = []
    progress: list[tuple[float, int]] = []
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            match = PROGRESS.search(line)
            if match:
                progress.append((time.monotonic(), int(match.group(2))))
            elif "tot_send_msgs=" in line and "msz=" not in line:
                final = re.search(r"tot_recv_msgs=(\d+)", line)
                if final:
                    progress.append((time.monotonic(), int(final.group(1))))
        process.wait()
    finally:
        timer.cancel()
    return "".join(lines), progress, time.monotonic() - start


def flow_rate(progress: list[tuple[float, int]]) -> tuple[float, float]:
    """Echoes/s between the last progress line before traffic and the final count."""
    if len(progress) < 2:
        return 0.0, 0.0
    first = next((i for i, (_, n) in enumerate(progress) if n > 0), None)
    if first is None:
        return 0.0, 0.0
    t0, n0 = progress[first - 1] if first > 0 else (progress[0][0] - 1.0, 0)
    t1, n1 = progress[-1]
    seconds = max(t1 - t0, 1e-3)
    return (n1 - n0) / seconds, seconds


def parse_report(output: str, result: Result) -> None:
    def last(pattern: str) -> tuple[str, ...] | None:
        found = re.findall(pattern, output)
        if not found:
            result.errors.append(f"uclient printed no {pattern!r}")
            return None
        value = found[-1]
        return value if isinstance(value, tuple) else (value,)

    totals = last(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
    if totals:
        result.sent, result.received = int(totals[0]), int(totals[1])
    loss = last(r"Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+)")
    if loss:
        result.lost, result.lost_percent, result.send_dropped = (
            int(loss[0]),
            float(loss[1]),
            int(loss[2]),
        )
    rtt = last(r"Average round trip delay ([\d.]+) ms; min = \d+ ms, max = (\d+) ms")
    if rtt:
        result.rtt_ms, result.rtt_max_ms = float(rtt[0]), int(rtt[1])


def run_one(name: str, args: argparse.Namespace, workdir: Path) -> Result:
    port = free_port()
    low, high = relay_range(args.relay_ports)
    if name == "coturn":
        command = coturn_command(port, low, high, workdir / "turnserver.log", args.coturn_threads)
    else:
        command = callgate_turn_command(port, low, high, realm=REALM, user=USER, password=PASSWORD)
    log = open(workdir / f"{name}.out", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    peer_port = free_udp_pair()
    peer = subprocess.Popen(
        [binary("turnutils_peer"), "-L", LOOPBACK, "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uclient = uclient_command(args, port, peer_port)
    result = Result(name, command, uclient)
    try:
        wait_ready(server, port, name)
        time.sleep(0.2)
        cpu_before = cpu_seconds(server.pid)
        drops_before = udp_rcvbuf_errors()
        output, progress, wall = run_uclient(uclient, args.timeout)
        result.cpu_seconds = cpu_seconds(server.pid) - cpu_before
        result.udp_rcvbuf_errors = udp_rcvbuf_errors() - drops_before
        result.wall_seconds = wall
        (workdir / f"{name}-uclient.out").write_text(output)
        parse_report(output, result)
        result.echoes_per_s, result.flow_seconds = flow_rate(progress)
        if result.received:
            result.cpu_us_per_echo = result.cpu_seconds * 1e6 / result.received
        if server.poll() is not None:
            result.errors.append(f"{name} died during the run (exit {server.returncode})")
    finally:
        peer.terminate()
        peer.wait()
        result.exit_code = stop(server) if server.poll() is None else server.returncode
        log.close()
    if result.exit_code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
        result.errors.append(f"{name} exit code on SIGTERM: {result.exit_code}")
    return result


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"load: {args.clients} clients x {args.messages} messages of {args.length} B, "
        f"-z {args.interval} ms, {args.transport}"
        f"{', Send indications' if args.send_indications else ', channels'}"
    )
    rows = [
        ("echoes/s", lambda r: f"{r.echoes_per_s:,.0f}"),
        ("sent", lambda r: f"{r.sent:,}"),
        ("received", lambda r: f"{r.received:,}"),
        ("lost", lambda r: f"{r.lost} ({r.lost_percent:.3f} %)"),
        ("send dropped", lambda r: f"{r.send_dropped}"),
        ("avg RTT ms", lambda r: f"{r.rtt_ms:.3f} (max {r.rtt_max_ms})"),
        ("server CPU s", lambda r: f"{r.cpu_seconds:.2f}"),
        ("CPU us/echo", lambda r: f"{r.cpu_us_per_echo:.1f}"),
        ("UDP rcvbuf drops", lambda r: f"{r.udp_rcvbuf_errors:,}"),
        ("flow s / wall s", lambda r: f"{r.flow_seconds:.1f} / {r.wall_seconds:.1f}"),
    ]
    width = 22
    print(f"{'':16}" + "".join(f"{r.server:>{width}}" for r in results))
    for label, cell in rows:
        print(f"{label:16}" + "".join(f"{cell(r):>{width}}" for r in results))
    by_name = {r.server: r for r in results}
    if "callgate" in by_name and "coturn" in by_name:
        c, t = by_name["callgate"], by_name["coturn"]
        print(
            f"\ncallgate/coturn: echoes/s {ratio(c.echoes_per_s, t.echoes_per_s)}, "
            f"CPU per echo {ratio(c.cpu_us_per_echo, t.cpu_us_per_echo)}"
        )
    for r in results:
        for error in r.errors:
            print(f"!! {r.server}: {error}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run, < 60 s (the default)")
    mode.add_argument("--heavy", action="store_true", help="stress: -z 0, more clients")
    parser.add_argument("--clients", type=int, help="uclient -m (sessions)")
    parser.add_argument("--messages", type=int, help="uclient -n (messages per client)")
    parser.add_argument("--interval", type=int, help="uclient -z, ms between messages")
    parser.add_argument("--length", type=int, help="uclient -l, message length in bytes")
    parser.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    parser.add_argument("--send-indications", action="store_true", help="uclient -s")
    parser.add_argument(
        "--servers", default="coturn,callgate", help="comma list of coturn,callgate"
    )
    parser.add_argument(
        "--coturn-threads", type=int, help="coturn --relay-threads (default: coturn's own)"
    )
    parser.add_argument("--relay-ports", type=int, default=2000, help="relay port range size")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per uclient run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="keep logs and uclient output in this dir")
    args = parser.parse_args(argv)
    preset = PRESETS["heavy" if args.heavy else "quick"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in servers:
        if name not in ("coturn", "callgate"):
            sys.exit(f"unknown server {name!r}")
    results = []
    with tempfile.TemporaryDirectory(prefix="turnbench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in servers:
            print(f"running {name} ...", flush=True)
            results.append(run_one(name, args, workdir))
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
