"""The anchor's SRTP stage alone: `SrtpIo` against pylibsrtp's `Session` methods, one run.

Per forwarded packet the anchor unprotects it with one leg's receive session, reads its RTP
header, keeps the payload, and protects the payload behind the other leg's header with that
leg's transmit session (media/srtp_path.py). This script does exactly that for N real SRTP
packets (AES-128-CM/HMAC-SHA1-80, a `mid` header extension, 80-byte payloads, handed in as
memoryviews as the relay hands them over), in turn:

  session   pylibsrtp's `Session.unprotect` / `protect` (the anchor before December 7 evening):
            the datagram copied to `bytes`, the plain packet and the payload copied out, the
            outgoing packet joined, copied in and out again
  srtp-io   media/srtp_io.py: libsrtp through pylibsrtp's binding, one buffer per session

Figures: this thread's CPU per packet (time.thread_time), the lowest and the median of the
rounds (interleaved, so both see the same neighbours); the lowest is the stage's own cost, the
rest is other tenants. No sockets, no event loop: the stage alone, not the anchor
(bench/anchor_path.py measures the whole path).

Then a SIP phone's leg (media/rtp_leg.py): N plain G.711 datagrams handed to its
`received_datagram` (parse, checks, the `MediaPacket`, its handler) on their way to the bridge,
no key pressed, with telephone-events negotiated, in turn:

  through   every packet through `DtmfToTones.packet` (the SIP edge before December 7 night)
  attached  `DtmfToTones.attach`ed to the leg: audio straight to the bridge (now)
  no-dtmf   no DtmfToTones at all: the floor

    .venv/bin/python bench/srtp_stage.py                    # 50,000 packets, 7 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import time
from collections.abc import Callable

from pylibsrtp import Policy, Session

from callgate.media.dtmf import DtmfToTones
from callgate.media.packets import MediaPacket
from callgate.media.rtp_leg import RtpLeg, RtpPacket, build_rtp
from callgate.media.srtp_io import SrtpIo

RTP_HEAD = struct.Struct("!BBHII")
SEQ_TS = struct.Struct("!HI")
WORD = struct.Struct("!H")
# V=2, X=1 (RFC 8285 one-byte extension: `mid`), PT 111, SSRC 0x01020304
HEADER = struct.pack("!BBHII", 0x90, 111, 0, 0, 0x01020304) + b"\xbe\xde\x00\x01\x10\x30\x00\x00"
MIN_RTP = 12


def srtp_packets(key: bytes, count: int) -> list[memoryview]:
    sender = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    out = []
    for seq in range(count):
        plain = HEADER[:2] + SEQ_TS.pack(seq & 0xFFFF, seq * 960) + HEADER[8:] + os.urandom(80)
        out.append(memoryview(bytearray(sender.protect(plain))))
    return out


def payload_offset(first: int, read_word: Callable[[int], int]) -> int:
    offset = MIN_RTP + 4 * (first & 0x0F)
    if first & 0x10:
        offset += 4 + 4 * read_word(offset + 2)
    return offset


def through_session(packets: list[memoryview], rx: Session, tx: Session) -> int:
    header = bytearray(HEADER)
    sent = 0
    for seq, data in enumerate(packets):
        plain = rx.unprotect(bytes(data))
        first, _, _, timestamp, _ = RTP_HEAD.unpack_from(plain)
        offset = payload_offset(first, lambda at: int.from_bytes(plain[at : at + 2], "big"))  # noqa: B023
        payload = plain[offset:]
        SEQ_TS.pack_into(header, 2, seq & 0xFFFF, timestamp)
        sent += len(tx.protect(b"".join((header, payload))))
    return sent


def through_srtp_io(packets: list[memoryview], rx: SrtpIo, tx: SrtpIo) -> int:
    sent = 0
    for seq, data in enumerate(packets):
        size = rx.unprotect(data)
        plain = rx.buffer
        first, _, _, timestamp, _ = RTP_HEAD.unpack_from(plain)
        offset = payload_offset(first, lambda at: WORD.unpack_from(plain, at)[0])  # noqa: B023
        payload = bytes(plain[offset:size])
        sent += len(tx.protect(HEADER, payload, seq & 0xFFFF, timestamp))
    return sent


def one_round(mode: str, packets: list[memoryview], key: bytes) -> tuple[float, int]:
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    tx = Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    start = time.thread_time()
    if mode == "session":
        sent = through_session(packets, rx, tx)
    else:
        sent = through_srtp_io(packets, SrtpIo(rx), SrtpIo(tx))
    return 1e6 * (time.thread_time() - start) / len(packets), sent


PHONE = ("127.0.0.1", 40000)
PHONE_MODES = ("through", "attached", "no-dtmf")


def phone_datagrams(count: int) -> list[bytes]:
    """A phone's PCMA packets (20 ms, 160 bytes), as they come off its socket."""
    return [
        build_rtp(RtpPacket(8, False, n % 65536, 160 * n % (1 << 32), 0x0A0B0C0D, bytes(160)))
        for n in range(count)
    ]


def phone_round(mode: str, datagrams: list[bytes]) -> tuple[float, float, int]:
    """CPU and wall µs per datagram through a phone's leg to the bridge; packets delivered."""
    bridge: list[MediaPacket] = []
    tones = DtmfToTones("pcma", 101, bridge.append)
    leg = RtpLeg("phone", bridge.append if mode == "no-dtmf" else tones.packet, "pcma", events=101)
    if mode == "attached":
        tones.attach(leg)
    leg.set_remote(PHONE)
    receive = leg.received_datagram
    cpu, wall = time.thread_time(), time.perf_counter()
    for data in datagrams:
        receive(data, PHONE)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return 1e6 * cpu / len(datagrams), 1e6 * wall / len(datagrams), len(bridge)


def handler_round(mode: str, count: int) -> tuple[float, float, int]:
    """The handler alone, as the leg calls it on each audio packet: CPU and wall ns a packet."""
    bridge: list[MediaPacket] = []
    tones = DtmfToTones("pcma", 101, bridge.append)
    leg = RtpLeg("phone", bridge.append if mode == "no-dtmf" else tones.packet, "pcma", events=101)
    if mode == "attached":
        tones.attach(leg)
    handler, packet = leg.on_audio, MediaPacket("phone", bytes(160), 0, 0, 1, 8, 0.0)
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(count):
        handler(packet)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return 1e9 * cpu / count, 1e9 * wall / count, len(bridge)


def phone_legs(count: int, rounds: int) -> None:
    datagrams = phone_datagrams(count)
    table: dict[str, dict[str, list[float]]] = {}
    for stage, per in (("leg", "us"), ("handler", "ns")):
        cpu: dict[str, list[float]] = {mode: [] for mode in PHONE_MODES}
        wall: dict[str, list[float]] = {mode: [] for mode in PHONE_MODES}
        for _ in range(rounds):
            for mode in PHONE_MODES:
                used, took, delivered = (
                    phone_round(mode, datagrams)
                    if stage == "leg"
                    else handler_round(mode, 20 * count)
                )
                if delivered != (count if stage == "leg" else 20 * count):
                    raise SystemExit(f"{mode}: {delivered} packets reached the bridge")
                cpu[mode].append(used)
                wall[mode].append(took)
        table[stage] = cpu
        what = (
            f"{count} phone datagrams through the whole leg (parse, checks, MediaPacket, handler)"
            if stage == "leg"
            else f"{20 * count} audio packets to the leg's audio handler alone"
        )
        print(f"\n{what}, {rounds} rounds, no key pressed")
        print(f"{'mode':<9} {per + '/packet CPU min':>17} {'median':>7} {'wall min':>9}")
        for mode in PHONE_MODES:
            print(f"{mode:<9} {min(cpu[mode]):>17.3f} {statistics.median(cpu[mode]):>7.3f} "
                  f"{min(wall[mode]):>9.3f}")  # fmt: skip
    handler = {mode: min(costs) for mode, costs in table["handler"].items()}
    leg = min(table["leg"]["no-dtmf"]) * 1000
    for mode in ("through", "attached"):
        extra = handler[mode] - handler["no-dtmf"]
        print(f"DtmfToTones on a phone's audio packet, {mode}: {extra:+.0f} ns "
              f"({100 * extra / leg:+.1f} % of the leg's {leg:.0f} ns)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    key = os.urandom(30)
    packets = srtp_packets(key, args.packets)
    rows: dict[str, list[float]] = {"session": [], "srtp-io": []}
    sent: dict[str, set[int]] = {name: set() for name in rows}
    for _ in range(args.rounds):
        for name in rows:
            cost, size = one_round(name, packets, key)
            rows[name].append(cost)
            sent[name].add(size)
    if len(sent["session"] | sent["srtp-io"]) != 1:
        raise SystemExit(f"the two stages sent different byte counts: {sent}")
    print(f"{args.packets} packets a round, {args.rounds} rounds: unprotect + header + protect")
    print(f"{'stage':<8} {'us/packet min':>13} {'median':>7}")
    for name, costs in rows.items():
        print(f"{name:<8} {min(costs):>13.2f} {statistics.median(costs):>7.2f}")
    print(f"srtp-io/session (min): {min(rows['srtp-io']) / min(rows['session']):.2f}")
    phone_legs(args.packets, args.rounds)


if __name__ == "__main__":
    main()
