"""A bidirectional transport flow and the per-packet inspection that gathers evidence on it.

A flow is keyed by its 5-tuple; side 0 is the endpoint that sent the first packet. Only the first
`INSPECT_LIMIT` payload-carrying packets are inspected (RFC 7983 demultiplexing on the first byte);
after that a flow only counts packets and bytes — the fast path.
"""

from __future__ import annotations

from collections.abc import Callable

from callgate.detect import native
from callgate.detect.apps import DISCORD, app_from_stun, discord_ip_discovery
from callgate.detect.bayes import Windows
from callgate.detect.media import (
    dtls_record,
    is_channel_data,
    is_openvpn_client_reset,
    is_quic_long_header,
    is_rtcp,
    is_sip,
    is_wireguard,
    media_kind,
    openvpn_data_key,
    rtp_header,
)
from callgate.detect.names import HelloBuffer
from callgate.detect.quic import crypto_frames, long_header_dcid
from callgate.detect.skype import FUNCTIONS, HEAD, HEADS, is_anchor
from callgate.detect.stunscan import (
    DATA,
    DATA_INDICATION,
    SEND,
    TURN_METHODS,
    parse_stun,
    split_rfc4571,
)

INSPECT_LIMIT = 64
QUICK_LIMIT = 16  # payloads after which a flow showing nothing real-time is given up
RANDOM_LIKE = 0.75  # `_randomness` of ciphertext-like payloads (verdict.statistical's test)
RTP_RUN = 3  # packets of one SSRC with increasing sequence numbers that make an RTP stream
_MAX_ADDRESSES = 32

Endpoint = tuple[bytes, int]


class Flow:
    """One flow and the evidence `inspect` gathered on it. A plain class, not a dataclass:
    importing `dataclasses` (and `inspect`, which it imports) costs a small capture's `callgate
    detect` ≈ 9 ms of its ≈ 50 (docs/detection.md, "Speed")."""

    __slots__ = (
        "a", "addresses", "app", "app_evidence", "b", "binding_only", "channel_data", "done",
        "dtls", "dtls_alert", "excluded", "first", "hello", "ice", "inspected", "ip_discovery", "last", "media",
        "octets", "openvpn_data", "openvpn_keys", "payload_bytes", "pkts", "proto", "quic",
        "quic_dcid",
        "random_samples", "rtcp", "rtp_ok", "rtp_pt", "rtp_runs", "server_name", "sip",
        "skype_anchor", "skype_heads", "skype_ruled_out", "srtp", "stun", "stun_classic", "turn",
        "voice", "vpn"
    )  # fmt: skip

    def __init__(self, proto: int, a: Endpoint, b: Endpoint, first: float, last: float) -> None:
        self.proto = proto
        self.a = a
        self.b = b
        self.first = first
        self.last = last
        self.pkts = [0, 0]
        self.octets = [0, 0]
        self.done = False
        self.inspected = 0
        self.excluded: str | None = None
        # evidence gathered by inspect()
        self.stun = 0
        self.stun_classic = False
        self.ice = False
        self.turn = False
        self.binding_only = True
        self.channel_data = 0
        # per direction: SSRC → [last sequence number, packets in the run]
        self.rtp_runs: list[dict[int, list[int]]] = [{}, {}]
        self.rtp_ok = [False, False]
        self.rtp_pt: set[int] = set()
        self.rtcp = 0
        self.dtls = False
        self.srtp = False
        self.dtls_alert: int | None = None  # a fatal DTLS alert in the clear (media.dtls_record)
        self.sip = False
        self.ip_discovery = False  # Discord voice IP Discovery (apps.discord_ip_discovery)
        self.quic = False
        self.vpn: str | None = None  # a tunnel recognized by its header: never a statistical guess
        # per direction, once a P_DATA_V2-like payload came
        self.openvpn_keys: list[bytes] | None = None
        self.openvpn_data = 0
        self.media: set[str] = set()
        self.app: str | None = None
        self.app_evidence: str | None = None
        self.addresses: list[tuple[str, bytes, int]] = []
        self.payload_bytes = 0
        self.random_samples: list[float] = []
        # bayes.py's windows of opaque UDP messages (None: not opaque UDP, or not yet)
        self.voice: Windows | None = None
        # classic Skype (skype.py): the first anchor message (b"" for a 3-byte one), and the
        # first bytes of each message while they could still be Skype's (None: not Skype's
        # framing)
        self.skype_anchor: bytes | None = None
        self.skype_heads: list[bytes] | None = None
        self.skype_ruled_out = False
        # the server name of a TLS or QUIC ClientHello sent by side 0 (names.py, quic.py)
        self.server_name: str | None = None
        self.hello: HelloBuffer | None = None
        self.quic_dcid: bytes | None = None

    def __repr__(self) -> str:
        return f"Flow({self.proto}, {self.a!r}, {self.b!r}, {self.first!r}, {self.last!r})"

    @property
    def packets(self) -> int:
        return self.pkts[0] + self.pkts[1]

    @property
    def rtp(self) -> bool:
        return self.rtp_ok[0] or self.rtp_ok[1]


def inspect(flow: Flow, side: int, payload: bytes, stream: bool, ts: float) -> None:
    """Gather evidence from one payload (`stream`: TCP, where RFC 4571 framing may apply) sent
    by `side` at `ts`."""
    flow.inspected += 1
    flow.payload_bytes += len(payload)
    voice = flow.voice
    if voice is not None and flow.inspected > QUICK_LIMIT:
        # opaque UDP that still looks like ciphertext: only the classifier's features from here
        voice.add(side, len(payload), ts)
        flow.done = flow.inspected >= INSPECT_LIMIT
        return
    if flow.inspected >= INSPECT_LIMIT or (flow.inspected >= QUICK_LIMIT and not _seen(flow)):
        flow.done = True
    if not stream:  # randomness counts only for opaque UDP (verdict.statistical)
        if len(flow.random_samples) < 6 and len(payload) >= 48:
            flow.random_samples.append(_randomness(payload))
        _skype(flow, payload)
        _openvpn(flow, side, payload)
        _inspect_one(flow, side, payload, stream)
        _voice(flow, side, len(payload), ts)
        return
    if side == 0 and flow.server_name is None:
        _tls_hello(flow, payload)
    if _inspect_one(flow, side, payload, stream):
        return
    for frame in split_rfc4571(payload):
        _inspect_one(flow, side, frame, stream)


def _inspect_one(flow: Flow, side: int, data: bytes, stream: bool) -> bool:
    """RFC 7983 §7 first-byte demultiplexing; True when the payload was recognized."""
    first = data[0] if data else 255
    if first <= 4 and is_wireguard(data):
        flow.vpn = "WireGuard"
        return True
    if first < 4:
        info = parse_stun(data)
        if info is None:
            if not stream and discord_ip_discovery(data):
                flow.ip_discovery = True
                flow.app = flow.app or DISCORD
                return True
            return False
        flow.stun += 1
        flow.stun_classic = flow.stun_classic or info.classic
        flow.ice = flow.ice or info.ice_check
        if info.method in TURN_METHODS:
            flow.turn = True
        if info.method != 1 or info.ice_check:
            flow.binding_only = False
        if flow.app is None:
            named = app_from_stun(info)
            if named is not None:
                flow.app, flow.app_evidence = named
        if len(flow.addresses) < _MAX_ADDRESSES:
            flow.addresses.extend(info.addresses)
        inner = info.get(DATA) if info.method in (SEND, DATA_INDICATION) else None
        if inner:  # what the relay carries (RFC 8656 §10, §11): ICE checks, DTLS, RTP
            _inspect_one(flow, side, inner, False)
        return True
    if 16 <= first < 64:
        if first >= 32 and flow.dtls:  # DTLS 1.3 unified header after a handshake (RFC 9147 §4)
            return True
        record = dtls_record(data)
        if record is None:
            return False
        flow.dtls = True
        flow.srtp = flow.srtp or record[1]
        if record[2] is not None and flow.dtls_alert is None:
            flow.dtls_alert = record[2]
        return True
    if 64 <= first < 128:
        if is_channel_data(data, stream):
            flow.channel_data += 1
            _inspect_one(flow, side, data[4 : 4 + ((data[2] << 8) | data[3])], False)
            return True
        if is_sip(data):
            flow.sip = True
            return True
        return False
    if 128 <= first < 192:
        return _rtp(flow, side, data)
    if first >= 192:
        flow.quic = flow.quic or is_quic_long_header(data)
        if flow.quic and side == 0 and not stream and flow.server_name is None:
            _quic_hello(flow, data)
        return flow.quic
    return False


def _rtp(flow: Flow, side: int, data: bytes) -> bool:
    """RTCP, or RTP tracked per direction: one SSRC, sequence numbers increasing (RFC 3550 §5.1)."""
    if is_rtcp(data):
        flow.rtcp += 1
        return True
    header = rtp_header(data)
    if header is None:
        return False
    pt, seq, _, ssrc = header
    runs = flow.rtp_runs[side]
    run = runs.get(ssrc)
    if run is None:
        if len(runs) >= 8:  # not a handful of streams: random bytes, not RTP
            return False
        run = runs[ssrc] = [seq, 0]
    run[1] = run[1] + 1 if 0 < (seq - run[0]) % 65536 <= 64 else 1
    run[0] = seq
    if run[1] >= RTP_RUN:
        # Each direction is marked on its own run: both sides of a call often use the same
        # payload type (Opus 111 both ways), which must not hide the second direction.
        flow.rtp_ok[side] = True
        if pt not in flow.rtp_pt:
            flow.rtp_pt.add(pt)
            flow.media.add(media_kind(pt, len(data)))
    if flow.rtp_ok[side] and (flow.rtp_ok[1 - side] or not flow.pkts[1 - side]):
        # Decided: the fast path from here on. ICE checks may follow the first media packets, so
        # a flow that has shown no STUN yet is watched a while longer before deciding.
        flow.done = flow.inspected >= (8 if flow.stun else 32)
    return True


def _skype(flow: Flow, payload: bytes) -> None:
    """Keep what skype.py judges: the anchor among the first four payloads (nDPI's rule), and the
    first HEAD bytes of up to HEADS messages — dropped (memory stays small) once two messages
    carry no Skype function, which rules out the framing test."""
    if flow.skype_anchor is None and flow.inspected <= 4 and is_anchor(payload):
        flow.skype_anchor = payload[:HEAD] if len(payload) >= HEAD else b""
    if flow.skype_ruled_out or len(payload) < HEAD:
        return
    heads = flow.skype_heads
    if heads is None:
        heads = flow.skype_heads = []
    elif len(heads) >= HEADS:
        return
    heads.append(payload[:HEAD])
    if sum(head[2] & 0x0F not in FUNCTIONS for head in heads) >= 2:
        flow.skype_heads, flow.skype_ruled_out = None, True


def _voice(flow: Flow, side: int, size: int, ts: float) -> None:
    """Feed bayes.py's windows while the flow is opaque UDP; at `QUICK_LIMIT` payloads with
    nothing recognized, keep it open (features only) when its payloads look like ciphertext —
    a voice candidate for verdict.statistical and classic Skype — else drop the windows."""
    if _recognized(flow):
        flow.voice = None
        return
    if flow.voice is None:
        if flow.inspected > 1:
            return  # dropped earlier: never a candidate again
        flow.voice = Windows()
    flow.voice.add(side, size, ts)
    if flow.inspected >= QUICK_LIMIT:
        random_like = bool(flow.random_samples) and min(flow.random_samples) >= RANDOM_LIKE
        if random_like:
            flow.done = False  # features only up to INSPECT_LIMIT (inspect's first branch)
        else:
            flow.voice = None


def _tls_hello(flow: Flow, payload: bytes) -> None:
    """A TLS ClientHello over TCP, reassembled from the client's segments."""
    if flow.hello is None:
        flow.hello = HelloBuffer()
    if flow.hello.done:
        return
    flow.server_name = flow.hello.add_segment(payload)


def _quic_hello(flow: Flow, datagram: bytes) -> None:
    """A ClientHello in the client's QUIC Initial packets (RFC 9001 §5.2), keyed by the DCID
    of its first Initial."""
    if flow.quic_dcid is None:
        flow.quic_dcid = long_header_dcid(datagram)
        if flow.quic_dcid is None:
            return
        flow.hello = HelloBuffer()
    if flow.hello is None or flow.hello.done:
        return
    frames = crypto_frames(datagram, flow.quic_dcid)
    if frames:
        flow.server_name = flow.hello.add_crypto(frames)
    elif flow.inspected > 8:
        flow.hello.done = True  # nothing decrypts: stop spending AES on this flow


def _openvpn(flow: Flow, side: int, payload: bytes) -> None:
    """OpenVPN over UDP on any port: the client's hard reset as the flow's first payload, or
    P_DATA_V2 messages repeating their direction's opcode and peer ID."""
    if flow.vpn is not None:
        return
    if flow.inspected == 1 and is_openvpn_client_reset(payload):
        flow.vpn = "OpenVPN"
        return
    key = openvpn_data_key(payload)
    if key is None:
        return
    keys = flow.openvpn_keys
    if keys is None:
        keys = flow.openvpn_keys = [b"", b""]
    if keys[side] == key:
        flow.openvpn_data += 1
    keys[side] = key
    if flow.openvpn_data >= 6:
        flow.vpn = "OpenVPN"


def _recognized(flow: Flow) -> bool:
    """Whether a protocol claimed the flow (random bytes may start RTP-like runs: not that)."""
    return bool(flow.stun or flow.dtls or flow.channel_data or flow.sip or flow.ip_discovery
                or flow.rtp_ok[0] or flow.rtp_ok[1] or flow.quic or flow.vpn)  # fmt: skip


def _seen(flow: Flow) -> bool:
    """Whether anything real-time-like has appeared (worth inspecting further)."""
    return bool(flow.stun or flow.dtls or flow.channel_data or flow.rtcp or flow.sip
                or flow.ip_discovery or flow.rtp_runs[0] or flow.rtp_runs[1])  # fmt: skip


def _distinct_in_python(sample: bytes) -> int:
    """How many different byte values `sample` holds."""
    return len(set(sample))


_distinct_bytes: Callable[[bytes], int] = _distinct_in_python
if native.enabled():  # the same count in C: ≈ 3 µs a payload in Python, 8 % of a large capture
    from callgate.detect import hotloops

    _distinct_bytes = hotloops.distinct


def _randomness(payload: bytes) -> float:
    """Distinct byte values relative to what uniformly random bytes of this length would show
    (≈1.0 for ciphertext such as SRTP, much lower for text or structured headers)."""
    sample = payload[:256]
    expected = 256.0 * (1.0 - (255.0 / 256.0) ** len(sample))
    return _distinct_bytes(sample) / expected
