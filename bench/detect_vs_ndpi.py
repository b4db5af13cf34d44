"""`callgate detect` — its compiled path, its numpy path — against Debian's `ndpiReader`, on a
synthetic capture and on the real capture mix, side by side in one run.

Generates a pcap of --packets packets (default 1 000 000; Ethernet/IPv4) mixing the traffic a
detector meets: WebRTC calls (ICE checks, then RTP both ways at 50 packets/s), TURN ChannelData,
DNS queries and answers, and TCP (HTTP-like) connections; then times each tool on it, then on every
pcap/pcapng file of --captures (default: the shared captures, ../shared/pcaps), one process per
file and tool (real captures are small: start-up weighs heavily; the table sums wall and CPU time
and gives the largest peak RSS). Each table gives, per tool:

  * wall time and packets/s (packets / wall time, start-up included), and CPU time (user +
    system) with packets per CPU-second, which a busy shared machine distorts less;
  * peak RSS of the process (os.wait4's ru_maxrss).

The tools are "callgate (compiled)" (callgate.detect.hotloops, when it was built at install),
"callgate (numpy)" (the same command with CALLGATE_DETECT_COMPILED=0) and ndpiReader. Each runs
--repeat rounds (default 3), the tools alternating within a round; the median round is printed.

    .venv/bin/python bench/detect_vs_ndpi.py                  # 1 M packets, then the mix
    .venv/bin/python bench/detect_vs_ndpi.py --only synthetic --packets 200000 --keep /tmp/s.pcap
    .venv/bin/python bench/detect_vs_ndpi.py --only captures --captures ../shared/pcaps/ndpi
    .venv/bin/python bench/detect_vs_ndpi.py --only synthetic --pcapng     # the same as pcapng
    # before/after in one run: another source tree (its src/) timed beside this one
    git archive main src | tar -x -C /tmp/before
    .venv/bin/python bench/detect_vs_ndpi.py --before /tmp/before/src

callgate's bytecode is compiled first (`python -m compileall` on the package), as an installed
package has it: with PYTHONDONTWRITEBYTECODE set (as on the shared development machine) every run
would otherwise compile its ~30 modules again, ≈ 0.05 CPU-s that no installed callgate spends.

`--before DIR` adds "callgate (before)": this venv's Python running the `callgate` of the source
tree DIR (a `src` directory, first on PYTHONPATH), its compiled module built from its own
hotloops.c when missing (with Python's compiler and the flags setup.py uses), its bytecode
compiled too; compiled path.

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
import sysconfig
import tempfile
import time
from collections.abc import Callable
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


def to_pcapng(source: Path, target: Path) -> None:
    """The classic pcap `source` (little-endian, µs, as `generate` writes it) as pcapng: a
    Section Header, one Interface Description (Ethernet, if_tsresol 6) and an Enhanced Packet
    Block per record."""

    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    with source.open("rb") as src, target.open("wb", buffering=8 << 20) as out:
        src.read(24)
        out.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        option = struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0)
        out.write(block(1, struct.pack("<HHI", 1, 0, 65535) + option))
        while len(head := src.read(16)) == 16:
            sec, usec, caplen, length = struct.unpack("<IIII", head)
            ticks = sec * 1_000_000 + usec
            out.write(block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, caplen,
                                           length) + src.read(caplen)))  # fmt: skip


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, peak RSS in MiB, exit status) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, proc.returncode


# callgate's two batch paths: the compiled record walk and decode (callgate.detect.hotloops) and
# the numpy one (CALLGATE_DETECT_COMPILED=0); the same command otherwise
PATHS = {"compiled": {"CALLGATE_DETECT_COMPILED": "1"}, "numpy": {"CALLGATE_DETECT_COMPILED": "0"}}
Tool = tuple[str, Callable[[Path], list[str]], dict[str, str]]


BEFORE: Path | None = None  # --before: another source tree's src/


def tools(output: Callable[[str], str]) -> list[Tool]:
    """(name, command for a capture, environment) of every tool timed, in the order run."""
    callgate = str(ROOT / ".venv" / "bin" / "callgate")
    found: list[Tool] = []
    if BEFORE is not None:
        python = str(ROOT / ".venv" / "bin" / "python")
        entry = "import sys; from callgate.entry import main; sys.argv[0] = 'callgate'; sys.exit(main())"
        found.append(("callgate (before)",
                      _command([python, "-c", entry, "detect", "{}", "--format", "json",
                                "--output", output("before")]),
                      {"PYTHONPATH": str(BEFORE), "CALLGATE_DETECT_COMPILED": "1"}))  # fmt: skip
    if not compiled_built():
        print("callgate.detect.hotloops is not built (no C compiler at install): numpy path only")
    for path, env in PATHS.items():
        if path == "compiled" and not compiled_built():
            continue
        found.append((f"callgate ({path})",
                      _command([callgate, "detect", "{}", "--format", "json", "--output",
                                output(path)]), env))  # fmt: skip
    reader = ndpi_reader()
    if reader:
        found.append(("ndpiReader", _command([reader, "-i", "{}", "-q", "-w", output("ndpi")]), {}))
    else:
        print("ndpiReader not found: apt-get install libndpi-bin (as root), then run again")
    return found


def _command(template: list[str]) -> Callable[[Path], list[str]]:
    """The command for a capture: `template` with "{}" replaced by its path."""
    return lambda capture: [str(capture) if part == "{}" else part for part in template]


def compiled_built() -> bool:
    probe = [str(ROOT / ".venv" / "bin" / "python"), "-c",
             "import callgate.detect.native as n; raise SystemExit(0 if n.built() else 1)"]  # fmt: skip
    return subprocess.run(probe, check=False).returncode == 0


def ndpi_reader() -> str | None:
    found = shutil.which("ndpiReader")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("installing Debian's libndpi-bin (ndpiReader) with apt-get …", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "libndpi-bin"],
                   check=False, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    return shutil.which("ndpiReader")


def prepare_before(src: Path) -> None:
    """The tree's compiled module (built from its own hotloops.c when missing) and bytecode."""
    source = src / "callgate" / "detect" / "hotloops.c"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    module = source.with_name("hotloops" + suffix)
    if source.exists() and not module.exists():
        compiler = (sysconfig.get_config_var("CC") or "cc").split()
        include = sysconfig.get_paths()["include"]
        subprocess.run([*compiler, "-shared", "-fPIC", "-O2", "-ffp-contract=off", f"-I{include}",
                        str(source), "-o", str(module)], check=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "callgate")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    print(f"callgate (before): {src}")


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


def real_captures(directory: Path, repeat: int) -> None:
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    packets = sum(_count(f) for f in files)
    print(f"\ncapture mix: {len(files)} captures in {directory}, {packets} packets, "
          f"{sum(f.stat().st_size for f in files) / 1e6:.1f} MB; one process per file and tool")  # fmt: skip
    print("(files under 4 MiB are read packet by packet, without numpy or the compiled code:"
          " both callgate rows then take that same path)")  # fmt: skip
    _table(tools(lambda _: os.devnull), files, packets, repeat)


def _table(found: list[Tool], files: list[Path], packets: int, repeat: int) -> None:
    """Each tool on every file, `repeat` rounds, the tools alternating within a round (so they
    share the machine's load); per tool the median round (by CPU time) is printed."""
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; median of "
          f"{repeat} round(s)")  # fmt: skip
    print(f"{'tool':<20}{'wall s':>8}{'packets/s':>12}{'CPU s':>8}{'packets/CPU-s':>15}"
          f"{'peak RSS MiB':>14}")  # fmt: skip
    rounds: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name, _, _ in found}
    for _ in range(repeat):
        for name, command, env in found:
            runs = [timed(command(f), env) for f in files]
            rounds[name].append((sum(r[0] for r in runs), sum(r[1] for r in runs),
                                 max(r[2] for r in runs), sum(r[3] != 0 for r in runs)))  # fmt: skip
    for name, results in rounds.items():
        wall, cpu, rss, failed = sorted(results, key=lambda r: r[1])[len(results) // 2]
        note = f"  ({failed} failed)" if failed else ""
        print(f"{name:<20}{wall:>8.2f}{packets / max(wall, 1e-9):>12,.0f}{cpu:>8.2f}"
              f"{packets / max(cpu, 1e-9):>15,.0f}{rss:>14}{note}")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def _count(path: Path) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from callgate.detect.capture import PcapReader

    reader = PcapReader(path)
    return sum(1 for _ in reader)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="write the capture here and keep it")
    parser.add_argument("--captures", type=Path, default=_shared_pcaps(),
                        help="the real capture mix (default: the shared nDPI captures)")  # fmt: skip
    parser.add_argument("--only", choices=("synthetic", "captures"),
                        help="time one of the two only")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="rounds per tool (median printed)")
    parser.add_argument("--pcapng", action="store_true",
                        help="write the synthetic capture as pcapng (same packets)")  # fmt: skip
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also time the callgate of this source tree (a src/ directory)")  # fmt: skip
    args = parser.parse_args()
    compile_bytecode()
    if args.before is not None:
        global BEFORE
        BEFORE = args.before.resolve()
        prepare_before(BEFORE)
    if args.only != "captures":
        synthetic(args.packets, args.keep, args.repeat, args.pcapng)
    if args.only != "synthetic":
        if args.captures is None or not args.captures.is_dir():
            print("no capture mix: pass --captures DIR")
        else:
            real_captures(args.captures, args.repeat)
    return 0


def _shared_pcaps() -> Path | None:
    for candidate in (ROOT.parent / "shared" / "pcaps", Path("/work/shared/pcaps")):
        if candidate.is_dir():
            return candidate
    return None


def synthetic(count: int, keep: Path | None, repeat: int, pcapng: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="detect-bench-"))
    capture = keep or workdir / ("synthetic.pcapng" if pcapng else "synthetic.pcap")
    start = time.perf_counter()
    if pcapng:
        packets = generate(workdir / "classic.pcap", count)
        to_pcapng(workdir / "classic.pcap", capture)
        (workdir / "classic.pcap").unlink()
    else:
        packets = generate(capture, count)
    size = capture.stat().st_size
    print(f"\nsynthetic capture: {capture} — {packets} packets, {size / 1e6:.0f} MB "
          f"(generated in {time.perf_counter() - start:.1f} s)")  # fmt: skip
    _table(tools(lambda name: str(workdir / f"report-{name}")), [capture], packets, repeat)
    reports = [workdir / f"report-{path}" for path in (*PATHS, "before")]
    if all(report.exists() for report in reports[:2]):
        same = reports[0].read_bytes() == reports[1].read_bytes()
        print(f"compiled and numpy reports identical: {same}")
    if reports[2].exists():
        print(
            f"before and compiled reports identical: {reports[2].read_bytes() == reports[0].read_bytes()}"
        )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
