"""`Bridge`: two anchor legs that forward each party's RTP to the other (docs/recording.md).

Each `AnchorLeg` is one aiortc peer connection ending at the server, relay-only through our own
TURN server, with one codec: Opus, or G.711 (PCMU/PCMA) when it meets a SIP phone or trunk. A
leg is either the answerer (the party sent an offer: the caller) or the offerer (the anchor
offers: the callee). Every packet a leg receives goes to the bridge's observer (a recorder, a
quality probe) and, unchanged, out of the other leg (`packets.py`) when both legs use the same
codec. A leg given fallback codecs (`also`, for the SIP edge) negotiates one of them only when
the party cannot take its first one; the bridge then transcodes each direction between the two
legs' codecs (`transcode.py`), and the observer still gets what each party sent.
Nothing here knows about recording or signaling: the SIP edge uses the same bridge, with a plain
RTP leg (`rtp_leg.py`) attached in place of a second peer connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from callgate.media import internals, rtcp_reports
from callgate.media.packets import (
    CODEC_CLOCKS,
    ForwardTrack,
    MediaPacket,
    PacketHandler,
    tap_receiver,
)
from callgate.media.srtp_path import LocalTurn, SrtpPath

if TYPE_CHECKING:  # numpy is loaded only when a call is transcoded (_transcoder)
    from callgate.media.transcode import Transcoder

log = logging.getLogger(__name__)
FRAME_SECONDS = 0.02  # a prompt frame, in every codec

CLOSE_TIMEOUT = 3.0
MAX_EARLY_CANDIDATES = 50
_RTPMAP = re.compile(r"^a=rtpmap:\d+ +([A-Za-z0-9_.-]+)/(\d+)", re.MULTILINE)
_AUDIO_FORMATS = re.compile(r"^m=audio +\d+ +[A-Z/]+((?: +\d+)*)", re.MULTILINE)
_STATIC = {"pcmu": "0", "pcma": "8", "g722": "9"}  # RFC 3551 §6
# The ICE servers a leg uses (the same shape `hello` gives clients), fresh for each leg.
IceServers = Callable[[], Sequence[Mapping[str, Any]]]


class AnchorError(Exception):
    """A leg could not be set up (no common codec, bad SDP)."""


def _configuration(servers: Sequence[Mapping[str, Any]]) -> Any:
    ice = [
        RTCIceServer(
            urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential")
        )
        for entry in servers
    ]
    return RTCConfiguration(iceServers=ice, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def _only(*names: str) -> list[Any]:
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    return [c for name in names for c in codecs if c.mimeType.lower() == f"audio/{name}"]


def offered_codecs(sdp: str) -> set[str]:
    """The anchor's codecs an SDP's audio lists (by rtpmap at their RTP clock, or G.711's static
    payload types)."""
    names = {(name.lower(), int(clock)) for name, clock in _RTPMAP.findall(sdp)}
    formats = {f for found in _AUDIO_FORMATS.findall(sdp) for f in found.split()}
    return {
        codec
        for codec, clock in CODEC_CLOCKS.items()
        if (codec, clock) in names or _STATIC.get(codec) in formats
    }


class Leg(Protocol):
    """What the bridge needs of a leg: where to send the other party's packets, whether it
    can send yet, and in which codec."""

    name: str
    codec: str
    connected: asyncio.Event

    def send(self, packet: MediaPacket) -> None: ...  # the payload unchanged, our own RTP stream

    async def close(self) -> None: ...


class AnchorLeg:
    """One party's peer connection, ending at the anchor. `codec`: "opus" (default), "pcmu" or
    "pcma" — the codec it negotiates; `also`: codecs it falls back to when the party cannot take
    that one (the bridge then transcodes, module doc). `codec` says the negotiated one once
    the offer or answer is applied."""

    def __init__(
        self,
        name: str,
        servers: Sequence[Mapping[str, Any]],
        on_packet: PacketHandler,
        codec: str = "opus",
        local_turn: LocalTurn | None = None,
        also: Sequence[str] = (),
    ):
        if codec not in CODEC_CLOCKS or any(other not in CODEC_CLOCKS for other in also):
            raise AnchorError(f"unknown codec {codec!r}")
        if changed := internals.problems():  # never anchor on internals we do not know
            raise AnchorError(f"media anchor disabled: aiortc/aioice changed ({changed[0]})")
        self.name = name
        self.codec = codec
        self._codecs = (codec, *(other for other in also if other != codec))
        self.pc = RTCPeerConnection(_configuration(servers))
        self.track = ForwardTrack(CODEC_CLOCKS[codec])  # what this leg sends to its party
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self._tapped = 0  # packets that came through aiortc's path (before the lean one)
        self.path: SrtpPath | None = None  # the lean per-packet path, once DTLS-SRTP is up
        self._transceiver: Any = None
        self.reports: rtcp_reports.LegReports | None = None  # its RTCP (rtcp_reports.py)
        self._on_packet = on_packet
        self._local_turn = local_turn  # our TURN server, when it runs in this process
        self._early: list[Mapping[str, Any]] = []  # trickled before the remote description
        self._remote_set = False
        self.pc.on("connectionstatechange", self._state_changed)

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            if self.path is None and self._transceiver is not None:
                # The lean path hands its packets straight to the bridge (and counts them).
                self.path = SrtpPath.attach(
                    self.name, self._transceiver, self._on_packet, self._local_turn
                )
            self.connected.set()
        elif state in ("failed", "closed"):
            self.failed.set()

    @property
    def received(self) -> int:
        """RTP packets received from the party, either path."""
        return self._tapped + (self.path.received if self.path is not None else 0)

    def _packet(self, packet: MediaPacket) -> None:
        self._tapped += 1
        self._on_packet(packet)

    def _prepare(self, transceiver: Any, codecs: Sequence[str]) -> None:
        transceiver.setCodecPreferences(_only(*codecs))
        transceiver.direction = "sendrecv"
        self._transceiver = transceiver
        self.reports = rtcp_reports.install(transceiver)  # one report every ~5 s, not ~2 a second
        tap_receiver(transceiver.receiver, self.name, self._packet)

    async def answer(self, offer_sdp: str) -> str:
        """The party offered: answer it (our codec only). Returns the answer SDP, ICE gathered."""
        # The transceiver exists before the offer is applied, so its codec preference filters
        # what the answer lists (aiortc negotiates codecs in setRemoteDescription).
        self._use(self.pick(offer_sdp))
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        self._prepare(transceiver, [self.codec])
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, AssertionError) as exc:
            raise AnchorError(f"bad offer: {exc}") from exc
        except Exception as exc:  # aiortc's OperationError: no common codec
            raise AnchorError(f"cannot use the offer: {exc}") from exc
        await self._flush_early()
        audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
        if len(audio) != 1:
            raise AnchorError("the offer must have exactly one audio stream")
        try:
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, AssertionError) as exc:
            raise AnchorError(f"cannot answer: {exc}") from exc
        sdp = str(self.pc.localDescription.sdp)
        if f"{self.codec}/{CODEC_CLOCKS[self.codec]}" not in sdp.lower():
            raise AnchorError(f"the offer has no {self.codec.upper()}")
        return sdp

    def pick(self, offer_sdp: str) -> str:
        """The codec `answer` takes from the party's offer: our first codec the party offers,
        else the first fallback it does (then transcoded)."""
        offered = offered_codecs(offer_sdp)
        return next((codec for codec in self._codecs if codec in offered), self.codec)

    async def offer(self) -> str:
        """The anchor offers to the party (our codec, then the fallbacks, in that order: an
        answerer that has our first codec picks it). Returns the offer SDP, ICE gathered."""
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        self._prepare(transceiver, self._codecs)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except (ValueError, AssertionError) as exc:
            raise AnchorError(f"bad answer: {exc}") from exc
        negotiated = getattr(self._transceiver, "_codecs", None) or []
        name = str(negotiated[0].mimeType).lower().removeprefix("audio/") if negotiated else ""
        if name not in self._codecs:
            raise AnchorError(f"the answer has none of {', '.join(self._codecs)}")
        self._use(name)
        await self._flush_early()

    @property
    def payload_type(self) -> int | None:
        """The negotiated codec's payload type, once the offer or answer is applied."""
        negotiated = getattr(self._transceiver, "_codecs", None) or []
        return int(negotiated[0].payloadType) if negotiated else None

    def _use(self, codec: str) -> None:
        self.codec = codec
        self.track.clock = CODEC_CLOCKS[codec]

    async def _flush_early(self) -> None:
        self._remote_set = True
        early, self._early = self._early, []
        for candidate in early:
            await self.add_candidate(candidate)

    async def add_candidate(self, candidate: Mapping[str, Any]) -> None:
        """A candidate the party trickled (browsers do; aiortc puts them all in its SDP)."""
        text = str(candidate.get("candidate") or "").removeprefix("candidate:")
        if not text:
            return
        if not self._remote_set:
            if len(self._early) < MAX_EARLY_CANDIDATES:
                self._early.append(candidate)
            return
        try:
            ice = candidate_from_sdp(text)
        except (AssertionError, ValueError, IndexError):
            log.info("leg %s: ignoring malformed candidate", self.name)
            return
        ice.sdpMid = candidate.get("sdpMid")
        ice.sdpMLineIndex = candidate.get("sdpMLineIndex")
        with contextlib.suppress(ValueError, AssertionError):
            await self.pc.addIceCandidate(ice)

    def send(self, packet: MediaPacket) -> None:
        """Send another party's packet to this leg's party, payload unchanged."""
        if self.path is not None:
            self.path.send(packet.payload, packet.timestamp)
        else:
            self.track.push(packet.payload, packet.timestamp)

    def send_own(self, payload: bytes, duration: int) -> bool:
        """A payload of the server's own to this leg's party (the recording prompt), on the
        lean path (srtp_path.py) or aiortc's (a leg that kept it)."""
        if self.path is not None:
            self.path.send_own(payload, duration)
        else:
            self.track.push_own(payload, duration)
        return True

    async def close(self) -> None:
        if self.path is not None:
            self.path.detach()
        self.track.stop()
        try:
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("anchor leg %s did not close within %.0f s", self.name, CLOSE_TIMEOUT)


_process_turn: LocalTurn | None = None  # this process's TURN server (`use_local_turn`)


def use_local_turn(local: LocalTurn | None) -> Callable[[], None]:
    """The TURN server running in this process (`TurnServer.udp_client`; `callgate serve` sets
    it while its server runs), for bridges made without one (the SIP edge's): their WebRTC legs
    then hand their packets to their allocations in-process too (srtp_path.py; a leg whose
    allocation is not found there keeps the sockets). None: no such server. Returns what undoes
    it (at shutdown): clears it unless another has been set since."""
    global _process_turn
    _process_turn = local

    def forget() -> None:
        global _process_turn
        if _process_turn is local:
            _process_turn = None

    return forget


class Bridge:
    """Two legs; each one's packets go to `observer`, then out of the other leg unchanged."""

    def __init__(
        self,
        ice_servers: IceServers,
        observer: PacketHandler | None = None,
        local_turn: LocalTurn | None = None,
    ) -> None:
        """`local_turn`: finds the allocations of the TURN server in `ice_servers` when it runs
        in this process, so the legs hand it their packets in-process (srtp_path.py); by
        default the one `use_local_turn` gave."""
        self._ice_servers = ice_servers
        self._observer = observer
        self._local_turn = local_turn if local_turn is not None else _process_turn
        self.legs: dict[str, AnchorLeg] = {}  # the WebRTC legs
        self._all: dict[str, Leg] = {}  # these and attached ones (an RTP leg)
        self._other: dict[str, Leg] = {}  # leg name -> the other leg
        self.transcoders: dict[str, Transcoder] = {}  # leg name -> its packets' transcoder
        self._muted: set[str] = set()  # legs hearing a prompt instead of the other party

    def leg(self, name: str, codec: str = "opus", also: Sequence[str] = ()) -> AnchorLeg:
        """A new leg called `name` (at most two; the second is paired with the first); `also`:
        codecs it may fall back to, transcoded (AnchorLeg)."""
        if name in self._all or len(self._all) >= 2:
            raise AnchorError(f"cannot add leg {name!r}")
        servers = self._ice_servers()
        leg = AnchorLeg(name, servers, self._forward, codec, self._local_turn, also)
        self.attach(leg)
        self.legs[name] = leg
        return leg

    def attach(self, leg: Leg) -> None:
        """Add a leg made elsewhere (a plain RTP leg, rtp_leg.py); its packets must go to
        `self.forward`."""
        name = leg.name
        if name in self._all or len(self._all) >= 2:
            raise AnchorError(f"cannot add leg {name!r}")
        if self._all:
            (first,) = self._all.values()
            self._other[first.name], self._other[name] = leg, first
        self._all[name] = leg

    def forward(self, packet: MediaPacket) -> None:
        """A packet one leg received: to the observer, then out of the other leg."""
        self._forward(packet)

    def _forward(self, packet: MediaPacket) -> None:
        observer = self._observer
        if observer is not None:
            observer(packet)
        other = self._other.get(packet.leg)
        if other is None or not other.connected.is_set() or other.name in self._muted:
            return
        source = self._all[packet.leg]
        if source.codec == other.codec or packet.payload_type == getattr(source, "events", None):
            other.send(packet)  # the same codec (or an RTP leg's RFC 4733 event): unchanged
            return
        # only the negotiated payload type is decoded (transcode.py: bounded work)
        expected = getattr(source, "payload_type", None)
        transcoder = self._transcoder(packet.leg, source.codec, other.codec)
        for converted in transcoder.convert(packet, expected):
            other.send(converted)

    def _transcoder(self, leg: str, source: str, target: str) -> Transcoder:
        from callgate.media.transcode import Transcoder  # numpy: only once legs' codecs differ

        transcoder = self.transcoders.get(leg)
        if transcoder is None or (transcoder.source, transcoder.target) != (source, target):
            transcoder = self.transcoders[leg] = Transcoder(source, target)
        return transcoder

    @property
    def transcoding(self) -> bool:
        """Whether the two legs negotiated different codecs (each direction is transcoded)."""
        codecs = {leg.codec for leg in self._all.values()}
        return len(self._all) == 2 and len(codecs) == 2

    async def announce(
        self,
        frames: Sequence[bytes],
        duration: int = 960,
        g711: Mapping[str, Sequence[bytes]] | None = None,
    ) -> None:
        """Play `frames` (Opus, `duration` RTP ticks each, 20 ms by default) to the party of
        every connected Opus leg, and `g711[codec]` (20 ms G.711 frames) to the party of every
        connected G.711 leg — a WebRTC leg negotiated to PCMU/PCMA or a plain RTP leg (a SIP
        phone or carrier) — in place of the other party's audio (which is still recorded),
        paced in real time; then forwarding resumes."""
        plays: dict[str, tuple[Sequence[bytes], int]] = {"opus": (frames, duration)}
        for codec, g711_frames in (g711 or {}).items():
            plays[codec] = (g711_frames, round(CODEC_CLOCKS[codec] * FRAME_SECONDS))
        legs = [
            speaker
            for leg in self._all.values()
            if leg.connected.is_set()
            and (speaker := _speaker(leg)) is not None
            and speaker.codec in plays
        ]
        names = {leg.name for leg in legs}
        self._muted |= names
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for i in range(max((len(f) for f, _ in plays.values()), default=0)):
                for leg in legs:
                    played, ticks = plays[leg.codec]
                    if i < len(played):
                        leg.send_own(played[i], ticks)
                await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_SECONDS - loop.time()))
        finally:
            self._muted -= names

    async def close(self) -> None:
        await asyncio.gather(*(leg.close() for leg in self._all.values()))


class Speaker(Protocol):
    """A leg the server can send payloads of its own through (the recording prompt)."""

    name: str
    codec: str

    def send_own(self, payload: bytes, duration: int) -> bool: ...


def _speaker(leg: Leg) -> Speaker | None:
    """`leg`, when the server can send its party payloads of its own: a WebRTC leg, or a plain
    RTP leg (rtp_leg.py)."""
    if isinstance(leg, AnchorLeg):
        return leg
    if callable(getattr(leg, "send_own", None)) and isinstance(getattr(leg, "codec", None), str):
        return cast(Speaker, leg)
    return None
