"""Bridged G.711 calls with a WebRTC leg: a browser-like party ↔ a phone, no transcoding, per core.

`sip_load.py --only bridge` joins two plain RTP legs; a phone ↔ browser call has a WebRTC leg
(aiortc, ICE, DTLS-SRTP, relay-only through our TURN) in place of one. Here, in this process as
under `callgate serve`: the TURN server (in-process, so each leg hands its packets to its
allocation in-process, media/srtp_path.py), and N bridges, each an `AnchorLeg` negotiated to PCMU
with an aiortc party and a plain `RtpLeg` with a "phone" (a UDP socket). Once all are connected,
every party and phone sends 50 packets a second of 160-byte PCMU for S seconds: the party's are
SRTP packets encrypted with its own keys, sent as ChannelData from its TURN client socket to the
relay (as a browser's reach the server), the phone's plain RTP to its leg. What the parties and
phones receive is only counted (their aiortc stacks do not decode it).

Reported: packets sent, forwarded each way, received, the load average before the traffic, and
CPU per call-second over the traffic window (and the 0.5 s after it); calls/core = 1000 / it.
By default everything runs in this one process, so the parties' and phones' own socket work (a
send and a receive per packet each) is in that figure: an upper bound of the server's cost.
With `--split` the bridges, the anchor and the TURN server stay in this process (as under
`callgate serve`) and the parties and phones run in a child process (this script with
`--party-side`), which connects to them over loopback sockets; SDP offers, answers and the RTP
addresses go over its stdin/stdout. The bridge process's CPU is then the server's alone, and
the party process's is reported beside it.

    .venv/bin/python bench/bridge_webrtc.py --calls 50 --seconds 20
    .venv/bin/python bench/bridge_webrtc.py --split --calls 60 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiortc import RTCSessionDescription

from anchor_path import SEQ_TS, nominated_turn, party, wait_for
from callgate.media.anchor import Bridge
from callgate.media.rtp_leg import PCMU, RtpLeg, RtpPacket, build_rtp
from callgate.media.srtp_path import CHANNEL_HEAD, _header_template
from callgate.turn.config import TurnConfig
from callgate.turn.server import TurnServer
from lean_party import IdleTrack
from serve_process import LOOPBACK, free_port, free_relay_range

FRAME = 160  # octets and RTP ticks of 20 ms of PCMU
INTERVAL = 0.02
SETTLE = 2.0  # seconds between the last connection and the traffic
TAIL = 0.5  # seconds after the last packet for the last ones to arrive


def turn_server(calls: int) -> TurnServer:
    low, high = free_relay_range(4 * calls + 20)
    config = TurnConfig(
        listen=((LOOPBACK, free_port()),), relay_ip=LOOPBACK, relay_port_min=low,
        relay_port_max=high, realm="bench", users={"bench": "bench-pass"},
        allow_peers=("127.0.0.0/8",), max_allocations_per_user=0, fast_path="off",
    )  # fmt: skip
    return TurnServer(config)


def new_bridge(port: int, server: TurnServer) -> Bridge:
    servers = [
        {
            "urls": [f"turn:{LOOPBACK}:{port}?transport=udp"],
            "username": "bench",
            "credential": "bench-pass",
        }
    ]
    return Bridge(lambda: servers, None, server.udp_client)


async def legs(bridge: Bridge, offer: str, phone: tuple[str, int]) -> tuple[Any, RtpLeg, str, Any]:
    """The bridge's WebRTC leg answering the party's offer and its RTP leg facing the phone."""
    web = bridge.leg("web", "pcmu")
    answer = await web.answer(offer)
    rtp = RtpLeg("phone", bridge.forward, "pcmu")
    media = await rtp.open(LOOPBACK)
    bridge.attach(rtp)
    rtp.set_remote(phone)
    return web, rtp, answer, media


class Ends:
    """A call's far ends: a browser-like party (aiortc, relay-only) and a phone (a UDP socket)."""

    def __init__(self, port: int) -> None:
        self.party = party(port)
        self.phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.phone.bind((LOOPBACK, 0))
        self.phone.setblocking(False)
        self.party_got = 0
        self.phone_got = 0
        self._party_send: Any = None
        self._media: tuple[str, int] | None = None

    async def offer(self) -> str:
        self.party.addTrack(IdleTrack())
        await self.party.setLocalDescription(await self.party.createOffer())
        return str(self.party.localDescription.sdp)

    async def answered(self, answer: str, media: tuple[str, int]) -> None:
        self._media = media
        await self.party.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def arm(self) -> None:
        """Once connected: count what arrives, and make the party's SRTP packets in advance."""
        pair, turn = nominated_turn(self.party)
        original = turn.datagram_received

        def party_receives(data: bytes, addr: Any) -> None:
            if data[0] & 0xC0 == 0x40 and 127 < data[4] < 192 and not 191 < data[5] < 224:
                self.party_got += 1  # SRTP in ChannelData: counted, not decoded
            else:
                original(data, addr)  # STUN, RTCP, DTLS

        turn.datagram_received = party_receives
        channel = turn.peer_to_channel[pair.remote_addr]
        transceiver = self.party.getTransceivers()[0]
        tx = transceiver.sender.transport._tx_srtp
        header = bytearray(_header_template(transceiver, int(transceiver.sender._ssrc)))
        self._party_packets: list[bytes] = []
        for i in range(3000):  # 60 s of packets, reused in a loop (replay window: fresh seqs)
            header[SEQ_TS : SEQ_TS + 6] = i.to_bytes(2, "big") + (i * FRAME).to_bytes(4, "big")
            data = tx.protect(bytes(header) + bytes([i & 0xFF]) * FRAME)
            self._party_packets.append(CHANNEL_HEAD.pack(channel, len(data)) + data)
        self._party_send = turn.transport.sendto
        self._party_server = turn.server
        asyncio.get_running_loop().add_reader(self.phone.fileno(), self._phone_readable)

    def _phone_readable(self) -> None:
        while True:
            try:
                self.phone.recv(2048)
            except BlockingIOError:
                return
            self.phone_got += 1

    def send(self, i: int) -> None:
        """The i-th 20 ms packet of the party and of the phone."""
        self._party_send(self._party_packets[i % len(self._party_packets)], self._party_server)
        packet = RtpPacket(PCMU, i == 0, i & 0xFFFF, i * FRAME, 0x1234, bytes([i & 0xFF]) * FRAME)
        assert self._media is not None
        self.phone.sendto(build_rtp(packet), self._media)

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.phone.fileno())
        await self.party.close()
        self.phone.close()


class Call:
    """One bridge and its far ends, in one process."""

    def __init__(self, port: int, server: TurnServer) -> None:
        self.bridge = new_bridge(port, server)
        self.ends = Ends(port)
        self.web: Any = None
        self.rtp: RtpLeg | None = None

    async def connect(self) -> None:
        offer = await self.ends.offer()
        self.web, self.rtp, answer, media = await legs(
            self.bridge, offer, self.ends.phone.getsockname()
        )
        await self.ends.answered(answer, media)
        await wait_for(
            lambda: self.web.connected.is_set() and self.ends.party.connectionState == "connected",
            "the WebRTC leg",
        )
        self.ends.arm()

    async def close(self) -> None:
        await asyncio.gather(self.ends.close(), self.bridge.close())


async def traffic(ends: list[Ends], seconds: float) -> int:
    """Every party and phone sends one packet per 20 ms for `seconds`; returns packets each sent."""
    loop = asyncio.get_running_loop()
    packets = int(seconds / INTERVAL)
    start = loop.time()
    for i in range(packets):
        for end in ends:
            end.send(i)
        await asyncio.sleep(max(0.0, start + (i + 1) * INTERVAL - loop.time()))
    await asyncio.sleep(TAIL)
    return packets


async def run(calls: int, seconds: float) -> dict[str, float]:
    async with turn_server(calls) as server:
        port = server.address()[1]
        made = [Call(port, server) for _ in range(calls)]
        for call in made:
            await call.connect()
        lean = sum(1 for c in made if c.web.path is not None and c.web.path.in_process)
        await asyncio.sleep(SETTLE)
        load = os.getloadavg()[0]
        cpu0, wall0 = time.process_time(), time.monotonic()
        packets = await traffic([c.ends for c in made], seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        result = {
            "calls": calls,
            "lean_in_process": lean,
            "sent_each_way": packets * calls,
            "to_phones": sum(c.ends.phone_got for c in made),
            "to_parties": sum(c.ends.party_got for c in made),
            "web_received": sum(c.web.path.received for c in made if c.web.path is not None),
            "rtp_received": sum(c.rtp.received for c in made if c.rtp is not None),
            "cpu_s": cpu,
            "wall_s": wall,
            "ms_per_call_s": 1000 * cpu / (calls * seconds),
            "load": load,
        }
        for call in made:
            await call.close()
    return result


def say(message: dict[str, Any]) -> None:
    """The party process's line to the bridge process (its stdout is the pipe)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def hear() -> dict[str, Any]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise RuntimeError("the bridge process went away")
    message: dict[str, Any] = json.loads(line)
    return message


async def party_side(port: int, calls: int, seconds: float) -> None:
    """The load generator alone: parties and phones, talking to the bridge process over a pipe."""
    ends = [Ends(port) for _ in range(calls)]
    for end in ends:
        say({"offer": await end.offer(), "phone": end.phone.getsockname()})
        reply = await hear()
        await end.answered(reply["answer"], tuple(reply["media"]))
        await wait_for(lambda e=end: e.party.connectionState == "connected", "the party")
        end.arm()
    say({"ready": True})
    await hear()  # "go"
    cpu0 = time.process_time()
    packets = await traffic(ends, seconds)
    cpu = time.process_time() - cpu0
    say(
        {
            "sent_each_way": packets * calls,
            "to_phones": sum(e.phone_got for e in ends),
            "to_parties": sum(e.party_got for e in ends),
            "party_cpu_s": cpu,
        }
    )
    await hear()  # "close": the bridges close first
    for end in ends:
        await end.close()


async def run_split(calls: int, seconds: float) -> dict[str, float]:
    """The bridges here, as under `callgate serve`; the parties and phones in a child process."""
    async with turn_server(calls) as server:
        port = server.address()[1]
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--party-side", str(port), "--calls", str(calls),
            "--seconds", str(seconds), stdin=PIPE, stdout=PIPE,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        pipe_in, pipe_out = child.stdout, child.stdin

        async def hear_child() -> dict[str, Any]:
            line = await pipe_out_read(pipe_in)
            message: dict[str, Any] = json.loads(line)
            return message

        def tell_child(message: dict[str, Any]) -> None:
            pipe_out.write((json.dumps(message) + "\n").encode())

        made: list[tuple[Bridge, Any, RtpLeg]] = []
        for _ in range(calls):
            asked = await hear_child()
            bridge = new_bridge(port, server)
            web, rtp, answer, media = await legs(bridge, asked["offer"], tuple(asked["phone"]))
            tell_child({"answer": answer, "media": media})
            made.append((bridge, web, rtp))
        await hear_child()  # "ready": every party connected
        await wait_for(lambda: all(w.connected.is_set() for _, w, _ in made), "the WebRTC legs")
        lean = sum(1 for _, w, _ in made if w.path is not None and w.path.in_process)
        await asyncio.sleep(SETTLE)
        load = os.getloadavg()[0]
        cpu0, wall0 = time.process_time(), time.monotonic()
        tell_child({"go": True})
        counts = await hear_child()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        result = {
            "calls": calls,
            "lean_in_process": lean,
            "sent_each_way": counts["sent_each_way"],
            "to_phones": counts["to_phones"],
            "to_parties": counts["to_parties"],
            "web_received": sum(w.path.received for _, w, _ in made if w.path is not None),
            "rtp_received": sum(r.received for _, _, r in made),
            "cpu_s": cpu,
            "wall_s": wall,
            "ms_per_call_s": 1000 * cpu / (calls * seconds),
            "party_ms_per_call_s": 1000 * counts["party_cpu_s"] / (calls * seconds),
            "load": load,
        }
        await asyncio.gather(*(bridge.close() for bridge, _, _ in made))
        tell_child({"close": True})
        await child.wait()
    return result


async def pipe_out_read(stream: asyncio.StreamReader) -> bytes:
    line = await stream.readline()
    if not line:
        raise RuntimeError("the party process went away")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--split", action="store_true", help="parties and phones in a separate process"
    )
    parser.add_argument("--party-side", type=int, metavar="TURN_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.party_side:
        asyncio.run(party_side(args.party_side, args.calls, args.seconds))
        return
    r = asyncio.run((run_split if args.split else run)(args.calls, args.seconds))
    where = "parties and phones in a separate process" if args.split else "one process"
    print(
        f"{r['calls']} bridged calls (WebRTC PCMU ↔ RTP PCMU), {args.seconds:g} s, loopback, "
        f"{where}; load average {r['load']:.2f} before the traffic"
    )
    print(f"  WebRTC legs on the lean path in-process: {r['lean_in_process']}/{r['calls']}")
    print(
        f"  sent each way {r['sent_each_way']}; party → anchor {r['web_received']} → phones "
        f"{r['to_phones']}; phone → anchor {r['rtp_received']} → parties {r['to_parties']}"
    )
    calls_core = 1000 / r["ms_per_call_s"]
    if args.split:
        print(
            f"  bridge process CPU {r['cpu_s']:.2f} s over {r['wall_s']:.1f} s wall: "
            f"{r['ms_per_call_s']:.2f} ms per call-second, ~{calls_core:.0f} calls per core; "
            f"party process {r['party_ms_per_call_s']:.2f} ms per call-second"
        )
    else:
        print(
            f"  CPU {r['cpu_s']:.2f} s over {r['wall_s']:.1f} s wall: {r['ms_per_call_s']:.2f} ms "
            f"per call-second (parties' and phones' sockets included), ~{calls_core:.0f} calls "
            "per core"
        )


if __name__ == "__main__":
    main()
