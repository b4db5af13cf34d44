"""Key presses the carrier of a dialled-out call sends by SIP INFO (RFC 2976, RFC 6086 §2's
legacy usage), without sockets: taken (`200`) in the answered dialog from the carrier's address
and played as the key's dual tone in the carrier's audio towards the caller; from anyone else
`403`, outside an answered call `481` (docs/sip.md, "DTMF")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callgate.media.dtmf import NO_EVENTS, DtmfToTones
from callgate.media.packets import MediaPacket
from callgate.sip.credentials import CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.message import SipRequest, parse_datagram
from callgate.sip.outbound import OutboundCall
from callgate.sip.registrar import Binding
from callgate.sip.transport import Peer
from callgate.sip.trunks import Trunk, Trunks
from callgate.storage.db import open_store, sqlite_url
from tests.integration.sip_client import ulaw_decode

TRUNK = Trunk("carrier", frozenset({"192.0.2.20"}), outbound=("192.0.2.30", 5060))


def peer(ip: str) -> Peer:
    return Peer("UDP", (ip, 5060), lambda data, target: None)


def info(call: OutboundCall, body: bytes, tag: str | None = None) -> SipRequest:
    """An INFO from the carrier inside the dialog our INVITE made: its To carries our tag."""
    ours = tag or call.from_tag
    data = (
        f"INFO sip:callgate@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30;branch=z9hG4bKi\r\n"
        f"From: <sip:+442079460000@192.0.2.30>;tag=cx\r\nTo: <sip:alice@callgate>;tag={ours}\r\n"
        f"Call-ID: {call.call_id}\r\nCSeq: 2 INFO\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/dtmf-relay\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_datagram(data)
    assert isinstance(message, SipRequest)
    return message


def strongest_two(samples: np.ndarray) -> tuple[float, float]:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / 8000)
    first = int(np.argmax(spectrum))
    spectrum[np.abs(freqs - freqs[first]) < 60] = 0
    second = int(np.argmax(spectrum))
    low, high = sorted((float(freqs[first]), float(freqs[second])))
    return low, high


async def test_a_carriers_info_key_is_played_to_the_caller_and_others_are_refused(
    tmp_path: Path,
) -> None:
    store = open_store(sqlite_url(tmp_path))
    try:
        edge = SipEdge(CredentialStore(store, "callgate"), trunks=Trunks([TRUNK]))
        target = Binding("+442079460000", "trunk:carrier", "sip:+442079460000@192.0.2.30:5060",
                         peer("192.0.2.30"), 0.0, "", 0)  # fmt: skip
        call = edge.outbound(target, "alice")
        edge._trunk_calls[call.call_id] = TRUNK.name  # as `dial` does
        heard: list[MediaPacket] = []
        from_carrier = DtmfToTones("pcmu", NO_EVENTS, heard.append)  # as sip_dialout.py does
        call.on_key = from_carrier.press
        key_5 = b"Signal=5\r\nDuration=200\r\n"

        # ringing: no dialog to take keys in yet
        assert (await edge._info(info(call, key_5), peer("192.0.2.30"))).status == 481
        call.answered = True
        # another host that learnt the dialog's identifiers: refused, nothing queued
        forged = await edge._info(info(call, key_5), peer("203.0.113.9"))
        assert (forged.status, forged.reason) == (403, "Forbidden (not a party to this dialog)")
        assert list(from_carrier.keys) == []
        # the carrier (its outbound host, or any of its addresses): taken
        assert (await edge._info(info(call, key_5), peer("192.0.2.30"))).status == 200
        assert list(from_carrier.keys) == ["5"]
        # not in this dialog (another tag): 481
        assert (await edge._info(info(call, key_5, "x"), peer("192.0.2.20"))).status == 481

        # the carrier's next audio carries the key's tone (770 + 1336 Hz) for its 200 ms,
        # then its own audio again; RFC 4733 events it sends still pass unchanged
        audio = b"\xff" * 160
        for n in range(12):
            from_carrier.packet(MediaPacket("callee", audio, n * 160, n, 7, 0, 0.0))
        event = MediaPacket("callee", b"\x05\x8a\x03\x20", 12 * 160, 12, 7, 101, 0.0)
        from_carrier.packet(event)
        toned = b"".join(p.payload for p in heard[:10])
        low, high = strongest_two(np.asarray(ulaw_decode(toned), dtype=float))
        assert abs(low - 770) < 15 and abs(high - 1336) < 15
        assert [p.payload for p in heard[10:]] == [audio, audio, b"\x05\x8a\x03\x20"]
    finally:
        store.close()
