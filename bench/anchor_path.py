"""The anchor's CPU per forwarded packet, its two per-packet paths and the relay side by side.

One `callgate turn` process on loopback; in this process a `Bridge` with its two legs, a real
`StreamRecorder` as the observer (encrypted, fsynced chunks in a temporary directory), and two
aiortc parties, alice and bob, relay-only through that TURN server. Once both legs are up, the
parties send nothing themselves: the script encrypts N RTP packets (20 ms Opus frames) with
alice's own SRTP keys, wraps each in ChannelData as the TURN server would, and hands them in
batches to the caller leg's TURN client socket handler, exactly where a datagram from the relay
enters the anchor. The anchor decrypts, parses, records, re-encrypts and sends each to bob
through the relay. Bob's socket handler is replaced by a counter (his costs stay out).

Measured, per packet: this process's CPU (all threads: the anchor, the recorder's chunk writer)
from the first batch until bob's relay socket has them all and the recorder has flushed; and the
relay process's CPU over the same span per relayed packet (the anchor's output crosses it twice:
into the anchor's allocation toward bob's, then out to bob). Modes, in turn, same harness:

  in-process   the lean path with the TURN server in this process, as under `callgate serve`:
               each leg hands its packets to its allocation and back in-process (srtp_path.py,
               "In-process handoff" in docs/recording.md). Packets are handed to the caller
               leg's allocation as the relay delivers them from alice's relayed address; the
               CPU figure is then the anchor's and the relay's together (both hops to bob).
  srtp-path    the anchor's lean path (media/srtp_path.py) with the relay in its own process
  aiortc-path  aiortc's own path (packets.py), what a leg keeps when the lean one cannot attach

`--codec pcmu`: both legs negotiate PCMU (the SIP edge's WebRTC side; 160-byte payloads, 160
ticks a packet) instead of Opus.

    .venv/bin/python bench/anchor_path.py                 # 20,000 packets a mode, 3 rounds
    .venv/bin/python bench/anchor_path.py --packets 50000 --rounds 5
    .venv/bin/python bench/anchor_path.py --codec pcmu --modes in-process,aiortc-path
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from callgate.media.anchor import AnchorLeg, Bridge
from callgate.media.srtp_path import (
    CHANNEL_HEAD,
    CHANNEL_OVERHEAD,
    LocalTurn,
    SrtpPath,
    _header_template,
    _turn_client,
)
from callgate.recording import keys
from callgate.recording.recorder import RecorderLimits, StreamRecorder
from callgate.recording.writer import ChunkWriter
from callgate.turn.allocation import framed
from callgate.turn.config import TurnConfig
from callgate.turn.server import TurnServer
from lean_party import FRAME, IdleTrack, frames_by_role
from serve_process import (
    LOOPBACK,
    callgate_turn_command,
    free_port,
    free_relay_range,
    process_cpu,
)
from turn_vs_coturn import wait_ready

BATCH = 25  # packets handed in before the loop runs (the forwarding queue holds 50)
TIGHT_BATCH = 200  # packets handed in back to back for the path-alone figure
SEQ_TS = 2  # offset of the sequence number in an RTP header
G711_FRAME = 160  # octets and RTP ticks of 20 ms of G.711


def ice(port: int) -> list[RTCIceServer]:
    url = f"turn:{LOOPBACK}:{port}?transport=udp"
    return [RTCIceServer(urls=[url], username="bench", credential="bench-pass")]


def party(port: int) -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=ice(port), iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    )


async def wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def nominated_turn(pc: RTCPeerConnection) -> Any:
    connection = pc.getTransceivers()[0].sender.transport.transport._connection
    return connection._nominated[1], _turn_client(connection._nominated[1])


async def connect(
    port: int,
    recorder: StreamRecorder,
    local: LocalTurn | None = None,
    codec: str = "opus",
    quiet: Callable[[RTCPeerConnection], None] = lambda pc: None,
) -> tuple[Any, ...]:
    """A bridge and its two parties, connected (`quiet` is applied to each party before its
    media starts: leg_idle.py stops their RTCP)."""
    servers = [
        {"urls": s.urls, "username": s.username, "credential": s.credential} for s in ice(port)
    ]
    bridge = Bridge(lambda: servers, recorder.on_packet, local)
    alice, bob = party(port), party(port)
    alice.addTrack(IdleTrack())
    quiet(alice)
    await alice.setLocalDescription(await alice.createOffer())
    caller: AnchorLeg = bridge.leg("caller", codec)
    answer = await caller.answer(alice.localDescription.sdp)
    await alice.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    callee: AnchorLeg = bridge.leg("callee", codec)
    await bob.setRemoteDescription(RTCSessionDescription(sdp=await callee.offer(), type="offer"))
    bob.addTrack(IdleTrack())
    quiet(bob)
    await bob.setLocalDescription(await bob.createAnswer())
    await callee.accept_answer(bob.localDescription.sdp)
    await wait_for(
        lambda: caller.connected.is_set() and callee.connected.is_set()
        and alice.connectionState == bob.connectionState == "connected",
        f"both legs ({caller.pc.connectionState} {callee.pc.connectionState} {alice.connectionState} {bob.connectionState})",
    )  # fmt: skip
    return bridge, alice, bob, caller, callee


def packets_from(
    alice: RTCPeerConnection, caller: AnchorLeg, count: int, codec: str = "opus"
) -> list[bytes]:
    """`count` SRTP packets as alice would send them, in ChannelData as the relay delivers them."""
    transceiver = alice.getTransceivers()[0]
    tx = transceiver.sender.transport._tx_srtp
    header = bytearray(_header_template(transceiver, int(transceiver.sender._ssrc)))
    pair, turn = nominated_turn(caller.pc)
    channel = turn.peer_to_channel[pair.remote_addr]
    frames, ticks = frames_by_role()["caller"], FRAME
    if codec != "opus":  # 20 ms of G.711: 160 octets, 160 ticks (RFC 3551 §4.5.14)
        frames, ticks = [bytes([i]) * G711_FRAME for i in range(256)], G711_FRAME
    out = []
    for i in range(count):
        header[SEQ_TS : SEQ_TS + 6] = (i & 0xFFFF).to_bytes(2, "big") + (
            (i * ticks) & 0xFFFFFFFF
        ).to_bytes(4, "big")
        data = tx.protect(bytes(header) + frames[i % len(frames)])
        out.append(CHANNEL_HEAD.pack(channel, len(data)) + data)
    return out


def in_process_server() -> TurnServer:
    """The relay inside this process, as `callgate serve` runs it (no kernel fast path)."""
    low, high = free_relay_range(100)
    config = TurnConfig(
        listen=((LOOPBACK, free_port()),), relay_ip=LOOPBACK, relay_port_min=low,
        relay_port_max=high, realm="bench", users={"bench": "bench-pass"},
        allow_peers=("127.0.0.0/8",), max_allocations_per_user=0, fast_path="off",
    )  # fmt: skip
    return TurnServer(config)


async def one_mode(mode: str, port: int, turn_pid: int, count: int, codec: str) -> dict[str, float]:
    if mode == "in-process":
        async with in_process_server() as server:
            return await measure(mode, server.address()[1], None, count, server.udp_client, codec)
    return await measure(mode, port, turn_pid, count, None, codec)


async def measure(
    mode: str, port: int, turn_pid: int | None, count: int, local: LocalTurn | None, codec: str
) -> dict[str, float]:
    lean = mode != "aiortc-path"
    attach = SrtpPath.attach
    if not lean:
        SrtpPath.attach = classmethod(lambda cls, *args: None)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="callgate-anchorpath-") as tmp:
        rid = "ab" * 16
        writer = ChunkWriter(Path(tmp) / "r.cgrec", rid, keys.new_recording_key(), 0)
        recorder = StreamRecorder(rid, writer, RecorderLimits(0.5, 3600.0), lambda reason: None)
        recorder.start()
        bridge, alice, bob, caller, _callee = await connect(port, recorder, local, codec)
        try:
            assert (caller.path is not None) is lean
            assert lean is False or caller.path.in_process is (local is not None)
            got = [0]
            _, bob_turn = nominated_turn(bob)
            bob_original = bob_turn.datagram_received

            def bob_receives(data: bytes, addr: Any) -> None:
                if data[0] & 0xC0 == 0x40 and 127 < data[4] < 192 and not 191 < data[5] < 224:
                    got[0] += 1  # RTP in ChannelData
                else:
                    bob_original(data, addr)  # STUN (consent), RTCP, DTLS

            bob_turn.datagram_received = bob_receives
            _, entry = nominated_turn(caller.pc)
            source = nominated_turn(caller.pc)[0].remote_addr
            packets = packets_from(alice, caller, count + (count if lean else 0), codec)
            deliver = entry.datagram_received
            if local is not None:  # as the relay delivers it: from alice's relayed address
                sockname = entry.transport.get_extra_info("sockname")
                allocation = local(entry.server, (sockname[0], sockname[1]))
                assert allocation is not None
                packets = [framed(p[CHANNEL_OVERHEAD:]) for p in packets]

                def deliver(frame: Any, peer: Any) -> None:
                    allocation.from_peer(frame, len(frame) - 4, peer)

            tight: list[float] = []  # CPU per packet of each batch
            if lean:  # the path alone: handed in back to back, this thread's CPU only
                tight_packets, packets = packets[:count], packets[count:]
                for start in range(0, count, TIGHT_BATCH):
                    cpu0 = time.thread_time()
                    for data in tight_packets[start : start + TIGHT_BATCH]:
                        deliver(data, source)
                    tight.append(
                        (time.thread_time() - cpu0) / len(tight_packets[start:][:TIGHT_BATCH])
                    )
                    await asyncio.sleep(0.001)  # bob's socket read, the recorder's chunk
                await asyncio.sleep(1.0)
            await asyncio.sleep(0.5)
            got[0] = 0
            relay0 = 0.0 if turn_pid is None else process_cpu(turn_pid)
            cpu0, wall0 = time.process_time(), time.monotonic()
            for start in range(0, count, BATCH):
                for data in packets[start : start + BATCH]:
                    deliver(data, source)
                target = min(count, start + BATCH) * 0.99
                await wait_for(lambda: got[0] >= target, "bob's relay socket")  # noqa: B023
            await recorder.close()
            cpu = time.process_time() - cpu0
            relay = 0.0 if turn_pid is None else process_cpu(turn_pid) - relay0
            wall = time.monotonic() - wall0
            recorded = recorder.packets["caller"] - (count if lean else 0)
        finally:
            SrtpPath.attach = attach  # type: ignore[method-assign]
            await asyncio.gather(alice.close(), bob.close(), bridge.close())
    return {
        "us_per_packet": 1e6 * cpu / count,
        "tight_us_per_packet": 1e6 * sorted(tight)[len(tight) // 10] if tight else 0.0,
        "relay_us_per_relayed": 1e6 * relay / (2 * count),
        "wall_s": wall,
        "delivered": got[0] / count,
        "recorded": recorded / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes", default="in-process,srtp-path,aiortc-path", help="comma-separated, in turn"
    )
    parser.add_argument("--codec", choices=("opus", "pcmu"), default="opus")
    args = parser.parse_args()
    port = free_port()
    low, high = free_relay_range(100)
    command = callgate_turn_command(
        port, low, high, realm="bench", user="bench", password="bench-pass"
    )
    relay = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in args.modes.split(",")}
    try:
        wait_ready(relay, port, "callgate turn")
        for _ in range(args.rounds):
            for name in rows:  # interleaved, so both see the same neighbours
                result = asyncio.run(one_mode(name, port, relay.pid, args.packets, args.codec))
                rows[name].append(result)
    finally:
        relay.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            relay.wait(5)
    print(
        f"{args.packets} {args.codec} packets a round, {args.rounds} rounds, one anchored "
        "direction, loopback"
    )
    print(
        f"{'path':<12} {'anchor us/pkt median (min)':>27} {'relay us/relayed pkt':>21} "
        f"{'anchor + 2 relayed':>18} {'path alone us/pkt':>17} "
        f"{'delivered':>9} {'recorded':>8} {'wall s':>6}"
    )
    for name, results in rows.items():
        per = [r["us_per_packet"] for r in results]
        relayed = statistics.median(r["relay_us_per_relayed"] for r in results)
        total = statistics.median(
            r["us_per_packet"] + 2 * r["relay_us_per_relayed"] for r in results
        )
        alone = [r["tight_us_per_packet"] for r in results]
        path = f"{statistics.median(alone):.1f} ({min(alone):.1f})" if max(alone) else "-"
        print(
            f"{name:<12} {statistics.median(per):>18.1f} ({min(per):>6.1f}) {relayed:>21.1f} "
            f"{total:>18.1f} {path:>17} "
            f"{min(r['delivered'] for r in results):>9.3f} "
            f"{min(r['recorded'] for r in results):>8.3f} "
            f"{statistics.median(r['wall_s'] for r in results):>6.1f}"
        )


if __name__ == "__main__":
    main()
