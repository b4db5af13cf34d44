"""The SIP edge under load: registrations per second (SIPp), bridged calls per core with and without transcoding.

Two parts, one run (docs in bench/README.md):

  register   `callgate serve --sip-listen` in a subprocess; SIPp (Debian sip-tester) runs the
             test suite's REGISTER scenario (REGISTER, 401 digest challenge, REGISTER with
             MD5 credentials, 200) at a fixed rate over UDP. Reported: successful and failed
             registrations, the rate achieved, and the server's CPU seconds (utime+stime from
             /proc, all threads) per 1000 registrations, beside SIPp's own CPU.
  bridge     N bridges in this process, each a `Bridge` joining two plain RTP legs
             (media/rtp_leg.py), the SIP side of a phone call; a child process plays both
             phones of every call, 50 packets/s of 160-byte PCMU each way (G.711, 20 ms).
             Reported: packets forwarded and lost, and this process's CPU per call-second, so
             calls per core = 1000 / (CPU ms per call-second). Then the same with
             transcoding, side by side in the same run: one leg of each bridge speaks Opus
             (20 ms frames of a tone, 50 packets/s), the other PCMU, so every packet is decoded
             and re-encoded (media/transcode.py) — as when a party offering Opus alone meets a
             G.711 phone. The Opus leg here is plain RTP (no DTLS-SRTP) so that the difference
             between the rows is the transcoding alone; a call with a browser has a WebRTC leg
             (aiortc, SRTP) in place of one RTP leg: see recording_load.py's anchor figures
             for that side's cost.

    .venv/bin/python bench/sip_load.py                       # 1000 REGISTERs at 100/s; 50+20 calls, 10 s
    .venv/bin/python bench/sip_load.py --rate 200 --registrations 4000 --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callgate.media.anchor import Bridge
from callgate.media.packets import MediaPacket, PacketHandler
from callgate.media.rtp_leg import RtpLeg
from serve_process import CallgateServe, callgate_binary, free_port, process_cpu

SCENARIO = Path(__file__).resolve().parent.parent / "tests/integration/sipp/register.xml"
LOOPBACK = "127.0.0.1"


def prepare(data_dir: Path) -> dict[str, str]:
    for args in (
        ["user", "add", "alice", "--password-stdin"],
        ["sip", "add", "alice", "desk", "--json"],
    ):
        done = subprocess.run(
            [callgate_binary(), *args, "--data-dir", str(data_dir)],
            input="bench-password-1\n", capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"callgate {' '.join(args)}: {done.stderr.strip()}")
    return dict(json.loads(done.stdout))


def register_load(rate: int, total: int) -> None:
    if shutil.which("sipp") is None:
        sys.exit("sipp not found: apt-get install sip-tester")
    with tempfile.TemporaryDirectory(prefix="callgate-sip-bench-") as tmp:
        data = Path(tmp) / "data"
        device = prepare(data)
        port = free_port()
        env = {"CALLGATE_SIP__LISTEN": f"{LOOPBACK}:{port}",
               "CALLGATE_SIP__ALGORITHMS": '["MD5", "SHA-256"]'}  # fmt: skip
        with CallgateServe({}, keep=data, extra_env=env) as serve:
            before = serve.cpu()
            started = time.monotonic()
            sipp = subprocess.Popen(
                ["sipp", f"{LOOPBACK}:{port}", "-sf", str(SCENARIO), "-s", "alice",
                 "-au", device["username"], "-ap", device["password"], "-t", "u1",
                 "-i", LOOPBACK, "-p", str(free_port()), "-r", str(rate), "-m", str(total),
                 "-l", str(rate * 2), "-timeout", "120s", "-nostdin", "-trace_stat",
                 "-stf", str(Path(tmp) / "stat.csv"), "-fd", "600", "-trace_err",
                 "-error_file", str(Path(tmp) / "errors.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp,
            )  # fmt: skip
            peak_cpu = 0.0
            while sipp.poll() is None:
                peak_cpu = process_cpu(sipp.pid)
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            server_cpu = serve.cpu() - before
        stats = (Path(tmp) / "stat.csv").read_text().splitlines()
        errors = Path(tmp) / "errors.log"
        if errors.exists():
            shutil.copy(errors, "/tmp/sip_load_errors.log")
    header, last = stats[0].split(";"), stats[-1].split(";")
    row = dict(zip(header, last, strict=False))
    ok, failed = int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])
    print("## register: SIPp REGISTER + digest (MD5) over UDP, loopback")
    print("| target rate | registrations ok | failed | achieved /s | server CPU s | "
          "server CPU ms / registration | SIPp CPU s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(f"| {rate}/s | {ok} | {failed} | {ok / elapsed:.0f} | {server_cpu:.2f} | "
          f"{1000 * server_cpu / max(ok, 1):.2f} | {peak_cpu:.2f} |")  # fmt: skip


PHONES = r"""
import socket, struct, sys, time
import av, numpy as np
targets = [(t[0], t[1]) for t in __import__("json").loads(sys.argv[1])]
codecs = [t[2] for t in __import__("json").loads(sys.argv[1])]
seconds = float(sys.argv[2])

def tone(rate, count, n):  # 440 Hz, the n-th frame
    t = (np.arange(count) + n * count) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)

def frames(codec):  # one second of 20 ms frames, sent over and over
    name, rate = {"pcmu": ("pcm_mulaw", 8000), "opus": ("libopus", 48000)}[codec]
    enc = av.CodecContext.create(name, "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "s16"
    out = []
    for n in range(60):
        f = av.AudioFrame.from_ndarray(tone(rate, rate // 50, n), format="s16", layout="mono")
        f.sample_rate, f.pts = rate, n * (rate // 50)
        out += [bytes(p) for p in enc.encode(f)]
    return out[:50]

PT = {"pcmu": (0, 160), "opus": (111, 960)}
payloads = {c: frames(c) for c in set(codecs)}
socks = []
for _ in targets:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
    s.setblocking(False); socks.append(s)
print(__import__("json").dumps([s.getsockname()[1] for s in socks]), flush=True)
sys.stdin.readline()
sent, got = 0, 0
start = time.monotonic(); n = 0
while time.monotonic() - start < seconds:
    for s, target, codec in zip(socks, targets, codecs):
        pt, step = PT[codec]
        head = struct.pack("!BBHII", 0x80, pt, n & 0xFFFF, n * step, 7)
        s.sendto(head + payloads[codec][n % 50], target)
        sent += 1
    for s in socks:
        try:
            while True:
                s.recv(2048); got += 1
        except BlockingIOError:
            pass
    n += 1
    time.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
time.sleep(1.0)  # let the bridge drain what is queued (a busy machine lags)
for s in socks:
    try:
        while True:
            s.recv(2048); got += 1
    except BlockingIOError:
        pass
print(__import__("json").dumps({"sent": sent, "received": got}), flush=True)
"""


class OpusRtpLeg(RtpLeg):
    """The bench's stand-in for a WebRTC leg negotiated to Opus: Opus in plain RTP (payload
    type 111), without the DTLS-SRTP a real one adds (the same with or without transcoding)."""

    def __init__(self, name: str, on_packet: PacketHandler) -> None:
        super().__init__(name, on_packet, "pcmu")
        self.codec, self.payload_type = "opus", 111

    def send(self, packet: MediaPacket) -> None:
        self.track.push(packet.payload, packet.timestamp)


async def bridge_load(calls: int, seconds: float, transcode: bool) -> str:
    """One row of the bridge table: `calls` bridges at once for `seconds`."""
    bridges: list[Bridge] = []
    legs: list[RtpLeg] = []
    for _ in range(calls):
        bridge = Bridge(lambda: [])
        for name in ("a", "b"):
            leg = (
                OpusRtpLeg(name, bridge.forward)
                if transcode and name == "b"
                else RtpLeg(name, bridge.forward, "pcmu")
            )
            await leg.open(LOOPBACK)
            bridge.attach(leg)
            legs.append(leg)
        bridges.append(bridge)
    targets = json.dumps([[*leg.local, leg.codec] for leg in legs])
    phones = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PHONES, targets, str(seconds),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert phones.stdout is not None and phones.stdin is not None
    ports = json.loads(await phones.stdout.readline())
    for leg, phone_port in zip(legs, ports, strict=True):
        leg.set_remote((LOOPBACK, phone_port))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before, drops_before = usage.ru_utime + usage.ru_stime, rcvbuf_errors()
    phones.stdin.write(b"go\n")
    await phones.stdin.drain()
    result = json.loads(await phones.stdout.readline())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before
    kernel_drops = rcvbuf_errors() - drops_before
    await phones.wait()
    await asyncio.sleep(0.5)
    forwarded = sum(leg.track.forwarded for leg in legs)
    received = sum(leg.received for leg in legs)
    dropped: dict[str, int] = {}
    for leg in legs:
        for reason, count in leg.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
    transcoded = sum(t.stats.packets_out for b in bridges for t in b.transcoders.values())
    for bridge in bridges:
        await bridge.close()
    ms_per_call_s = 1000 * cpu / (calls * seconds)
    mode = "PCMU ↔ Opus, transcoded" if transcode else "PCMU ↔ PCMU, forwarded"
    return (f"| {mode} | {calls} | {seconds:.0f} | {result['sent']} | {received} | "
            f"{dropped or 0} | {kernel_drops} | {forwarded} | {transcoded} | "
            f"{result['received']} | {cpu:.2f} | {ms_per_call_s:.2f} | "
            f"{1000 / ms_per_call_s:.0f} |")  # fmt: skip


async def bridge_table(calls: int, seconds: float, transcode_calls: int) -> None:
    rows = [
        await bridge_load(calls, seconds, transcode=False),
        await bridge_load(transcode_calls, seconds, transcode=True),
    ]
    print("\n## bridge: plain RTP ↔ plain RTP through `Bridge`, 50 pkt/s each way")
    print("| mode | calls | seconds | packets sent | received by legs | dropped | "
          "UDP rcvbuf drops | sent by legs | of them transcoded | received back | CPU s | "
          "CPU ms / call-second | calls per core (est.) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def rcvbuf_errors() -> int:
    """Datagrams the kernel dropped for full receive buffers, host-wide (/proc/net/snmp)."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    names, values = [line.split() for line in lines if line.startswith("Udp:")][:2]
    return int(values[names.index("RcvbufErrors")])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=100, help="REGISTERs per second")
    parser.add_argument("--registrations", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=50, help="bridged calls at once")
    parser.add_argument(
        "--transcoded-calls", type=int, default=20, help="transcoded bridged calls at once"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="media per call")
    parser.add_argument("--only", choices=["register", "bridge"])
    args = parser.parse_args()
    if args.only in (None, "register"):
        register_load(args.rate, args.registrations)
    if args.only in (None, "bridge"):
        asyncio.run(bridge_table(args.calls, args.seconds, args.transcoded_calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
