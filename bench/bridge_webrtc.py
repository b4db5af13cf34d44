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

Reported: packets sent, forwarded each way, received, and this process's CPU per call-second over
the traffic window. The parties' and phones' own socket work (a send and a receive per packet
each) is in that figure too: it is an upper bound of the server's cost. calls/core = 1000 / it.

    .venv/bin/python bench/bridge_webrtc.py --calls 50 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
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


def turn_server(calls: int) -> TurnServer:
    low, high = free_relay_range(4 * calls + 20)
    config = TurnConfig(
        listen=((LOOPBACK, free_port()),), relay_ip=LOOPBACK, relay_port_min=low,
        relay_port_max=high, realm="bench", users={"bench": "bench-pass"},
        allow_peers=("127.0.0.0/8",), max_allocations_per_user=0, fast_path="off",
    )  # fmt: skip
    return TurnServer(config)


class Call:
    """One bridge: a party's WebRTC leg (PCMU) and a phone's RTP leg, and their traffic."""

    def __init__(self, port: int, server: TurnServer) -> None:
        servers = [
            {
                "urls": [f"turn:{LOOPBACK}:{port}?transport=udp"],
                "username": "bench",
                "credential": "bench-pass",
            }
        ]
        self.bridge = Bridge(lambda: servers, None, server.udp_client)
        self.party = party(port)
        self.phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.phone.bind((LOOPBACK, 0))
        self.phone.setblocking(False)
        self.party_got = 0
        self.phone_got = 0
        self.web: Any = None
        self.rtp: RtpLeg | None = None
        self._party_send: Any = None
        self._media: tuple[str, int] | None = None

    async def connect(self) -> None:
        self.party.addTrack(IdleTrack())
        await self.party.setLocalDescription(await self.party.createOffer())
        self.web = self.bridge.leg("web", "pcmu")
        answer = await self.web.answer(self.party.localDescription.sdp)
        await self.party.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await wait_for(
            lambda: self.web.connected.is_set() and self.party.connectionState == "connected",
            "the WebRTC leg",
        )
        self.rtp = RtpLeg("phone", self.bridge.forward, "pcmu")
        self._media = await self.rtp.open(LOOPBACK)
        self.bridge.attach(self.rtp)
        self.rtp.set_remote(self.phone.getsockname())
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
        loop = asyncio.get_running_loop()
        loop.add_reader(self.phone.fileno(), self._phone_readable)

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
        await asyncio.gather(self.party.close(), self.bridge.close())
        self.phone.close()


async def run(calls: int, seconds: float) -> dict[str, float]:
    async with turn_server(calls) as server:
        port = server.address()[1]
        made = [Call(port, server) for _ in range(calls)]
        for call in made:
            await call.connect()
        lean = sum(1 for c in made if c.web.path is not None and c.web.path.in_process)
        await asyncio.sleep(2.0)
        loop = asyncio.get_running_loop()
        packets = int(seconds / INTERVAL)
        cpu0, wall0 = time.process_time(), time.monotonic()
        start = loop.time()
        for i in range(packets):
            for call in made:
                call.send(i)
            await asyncio.sleep(max(0.0, start + (i + 1) * INTERVAL - loop.time()))
        await asyncio.sleep(0.5)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        result = {
            "calls": calls,
            "lean_in_process": lean,
            "sent_each_way": packets * calls,
            "to_phones": sum(c.phone_got for c in made),
            "to_parties": sum(c.party_got for c in made),
            "web_received": sum(c.web.path.received for c in made if c.web.path is not None),
            "rtp_received": sum(c.rtp.received for c in made if c.rtp is not None),
            "cpu_s": cpu,
            "wall_s": wall,
            "ms_per_call_s": 1000 * cpu / (calls * seconds),
        }
        for call in made:
            await call.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    r = asyncio.run(run(args.calls, args.seconds))
    print(f"{r['calls']} bridged calls (WebRTC PCMU ↔ RTP PCMU), {args.seconds:g} s, loopback;")
    print(f"  WebRTC legs on the lean path in-process: {r['lean_in_process']}/{r['calls']}")
    print(
        f"  sent each way {r['sent_each_way']}; party → anchor {r['web_received']} → phones "
        f"{r['to_phones']}; phone → anchor {r['rtp_received']} → parties {r['to_parties']}"
    )
    calls_core = 1000 / r["ms_per_call_s"]
    print(
        f"  CPU {r['cpu_s']:.2f} s over {r['wall_s']:.1f} s wall: {r['ms_per_call_s']:.2f} ms "
        f"per call-second (parties' and phones' sockets included), ~{calls_core:.0f} calls per core"
    )


if __name__ == "__main__":
    main()
