"""`callgate detect` against Debian's `ndpiReader` on the same synthetic capture, same run.

Generates a pcap of --packets packets (default 1 000 000; Ethernet/IPv4) mixing the traffic a
detector meets: WebRTC calls (ICE checks, then RTP both ways at 50 packets/s), TURN ChannelData,
DNS queries and answers, and TCP (HTTP-like) connections; then times each tool on it:

  * wall time and packets/s (packets in the file / wall time, start-up included), and CPU time
    (user + system) with packets per CPU-second, which a busy shared machine distorts less;
  * peak RSS of the process (os.wait4's ru_maxrss).

    .venv/bin/python bench/detect_vs_ndpi.py                  # 1 M packets
    .venv/bin/python bench/detect_vs_ndpi.py --packets 200000 --keep /tmp/synthetic.pcap
    .venv/bin/python bench/detect_vs_ndpi.py --captures ../shared/pcaps/ndpi   # real captures

With --captures DIR, every pcap/pcapng file of DIR is timed instead, one process per file and tool
(real captures are small: start-up weighs heavily); the table sums wall and CPU time and gives the
largest peak RSS.

callgate's bytecode is compiled first (`python -m compileall` on the package), as an installed
package has it: with PYTHONDONTWRITEBYTECODE set (as on the shared development machine) every run
would otherwise compile its ~30 modules again, ≈ 0.05 CPU-s that no installed callgate spends.

ndpiReader comes from Debian's libndpi-bin; when missing the script installs it with apt-get if run
as root, otherwise prints the command and times callgate alone.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAGIC = 0x2112A442


def ip_udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0, src, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp + payload


def ip_tcp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes, flags: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0, src, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + payload


def ice_check(rng: random.Random) -> bytes:
    attrs = struct.pack("!HH", 0x0006, 9) + b"abcd:efgh" + b"\x00" * 3
    attrs += struct.pack("!HHI", 0x0024, 4, 0x6E7F1EFF)
    attrs += struct.pack("!HH", 0x802A, 8) + rng.randbytes(8)
    attrs += struct.pack("!HH", 0x0008, 20) + rng.randbytes(20)
    return struct.pack("!HHI", 0x0001, len(attrs), MAGIC) + rng.randbytes(12) + attrs


def host(n: int, private: bool) -> bytes:
    return bytes([10 if private else 198, (n >> 16) & 255, (n >> 8) & 255, n & 255 or 1])


def generate(path: Path, total: int, seed: int = 7) -> int:
    """Write the synthetic capture; return the packet count. Shares (by packets): ~60 % RTP,
    ~10 % TURN ChannelData, ~15 % DNS, ~15 % TCP."""
    rng = random.Random(seed)
    noise = rng.randbytes(4096)
    written = 0
    t = 1_700_000_000.0
    with path.open("wb", buffering=8 << 20) as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        flow = 0
        while written < total:
            flow += 1
            kind = flow % 20
            a, b = host(flow, True), host(flow, False)
            sport, dport = 20000 + flow % 40000, 30000 + (flow * 7) % 30000
            frames: list[bytes] = []
            if kind < 12:  # a call: 4 ICE checks then 60 s of RTP both ways (scaled down)
                frames += [ip_udp(a, sport, b, dport, ice_check(rng)) for _ in range(2)]
                frames += [ip_udp(b, dport, a, sport, ice_check(rng)) for _ in range(2)]
                for seq in range(rng.randrange(200, 600)):
                    head = struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 0xABC0 + flow)
                    off = (seq * 37) % 3900
                    frames.append(ip_udp(a, sport, b, dport, head + noise[off : off + 120]))
                    frames.append(ip_udp(b, dport, a, sport, head + noise[off + 1 : off + 121]))
            elif kind < 14:  # TURN ChannelData to a relay
                for i in range(rng.randrange(200, 500)):
                    body = noise[i % 3000 : i % 3000 + 100]
                    frames.append(ip_udp(a, sport, b, 3478, struct.pack("!HH", 0x4001, 100) + body))
            elif kind < 17:  # DNS query/answer pairs from one port
                for _ in range(rng.randrange(20, 60)):
                    q = (
                        rng.randbytes(2)
                        + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
                    )
                    frames.append(ip_udp(a, sport, b, 53, q))
                    frames.append(ip_udp(b, 53, a, sport, q + noise[:16]))
            else:  # TCP: handshake, request, response segments, FIN
                frames.append(ip_tcp(a, sport, b, 443, b"", 0x02))
                frames.append(ip_tcp(b, 443, a, sport, b"", 0x12))
                for i in range(rng.randrange(50, 300)):
                    frames.append(ip_tcp(b, 443, a, sport, noise[i % 2000 : i % 2000 + 1400], 0x10))
                    if i % 2:
                        frames.append(ip_tcp(a, sport, b, 443, b"", 0x10))
                frames.append(ip_tcp(a, sport, b, 443, b"", 0x11))
            for frame in frames[: total - written]:
                t += 0.0001
                sec = int(t)
                out.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame)))
                out.write(frame)
            written += min(len(frames), total - written)
    return written


def timed(command: list[str]) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, peak RSS in MiB, exit status) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, proc.returncode


def ndpi_reader() -> str | None:
    found = shutil.which("ndpiReader")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("installing Debian's libndpi-bin (ndpiReader) with apt-get …", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "libndpi-bin"],
                   check=False, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    return shutil.which("ndpiReader")


def compile_bytecode() -> None:
    """Write callgate's .pyc files, as installing the package does (see the module docstring)."""
    package = ROOT / "src" / "callgate"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    note = (
        " (PYTHONDONTWRITEBYTECODE is set here)"
        if os.environ.get("PYTHONDONTWRITEBYTECODE")
        else ""
    )
    print(f"callgate bytecode compiled in {package}{note}")


def real_captures(directory: Path) -> int:
    compile_bytecode()
    files = sorted(p for p in directory.iterdir() if p.suffix in (".pcap", ".pcapng"))
    callgate = ROOT / ".venv" / "bin" / "callgate"
    reader = ndpi_reader()
    tools = {"callgate detect": lambda f: [str(callgate), "detect", str(f), "--format", "json",
                                           "--output", os.devnull]}  # fmt: skip
    if reader:
        tools["ndpiReader"] = lambda f: [reader, "-i", str(f), "-q", "-w", os.devnull]
    packets = sum(_count(f) for f in files)
    print(f"{len(files)} captures in {directory}, {packets} packets")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'tool':<18}{'wall s':>8}{'CPU s':>8}{'packets/CPU-s':>15}{'peak RSS MiB':>14}")
    for name, command in tools.items():
        runs = [timed(command(f)) for f in files]
        wall, cpu = sum(r[0] for r in runs), sum(r[1] for r in runs)
        failed = sum(r[3] != 0 for r in runs)
        note = f"  ({failed} failed)" if failed else ""
        print(f"{name:<18}{wall:>8.2f}{cpu:>8.2f}{packets / max(cpu, 1e-9):>15,.0f}"
              f"{max(r[2] for r in runs):>14}{note}")  # fmt: skip
    return 0


def _count(path: Path) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from callgate.detect.capture import PcapReader

    reader = PcapReader(path)
    return sum(1 for _ in reader)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="write the capture here and keep it")
    parser.add_argument("--captures", type=Path, help="time these real captures instead")
    args = parser.parse_args()
    if args.captures:
        return real_captures(args.captures)

    workdir = Path(tempfile.mkdtemp(prefix="detect-bench-"))
    capture = args.keep or workdir / "synthetic.pcap"
    start = time.perf_counter()
    packets = generate(capture, args.packets)
    size = capture.stat().st_size
    print(f"capture: {capture} — {packets} packets, {size / 1e6:.0f} MB "
          f"(generated in {time.perf_counter() - start:.1f} s)")  # fmt: skip

    compile_bytecode()
    callgate = ROOT / ".venv" / "bin" / "callgate"
    runs = {"callgate detect": [str(callgate), "detect", str(capture), "--format", "json",
                                "--output", str(workdir / "report.json")]}  # fmt: skip
    reader = ndpi_reader()
    if reader:
        runs["ndpiReader"] = [reader, "-i", str(capture), "-q", "-w", str(workdir / "ndpi.txt")]
    else:
        print("ndpiReader not found: apt-get install libndpi-bin (as root), then run again")

    print(f"\nload average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'tool':<18}{'wall s':>8}{'packets/s':>12}{'CPU s':>8}{'packets/CPU-s':>15}"
          f"{'peak RSS MiB':>14}")  # fmt: skip
    for name, command in runs.items():
        wall, cpu, rss, status = timed(command)
        note = "" if status == 0 else f"  (exit {status})"
        print(f"{name:<18}{wall:>8.2f}{packets / wall:>12,.0f}{cpu:>8.2f}"
              f"{packets / max(cpu, 1e-9):>15,.0f}{rss:>14}{note}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
