"""`Bridge`: two anchor legs that forward each party's RTP to the other (docs/recording.md).

Each `AnchorLeg` is one aiortc peer connection ending at the server, relay-only through our own
TURN server, with one codec: Opus, or G.711 (PCMU/PCMA) when it meets a SIP phone or trunk. A leg is either the answerer (the party sent an offer: the caller) or the
offerer (the anchor offers: the callee). Every packet a leg receives goes to the bridge's
observer (a recorder, a quality probe) and, unchanged, out of the other leg (`packets.py`).
Nothing here knows about recording or signaling: the SIP edge uses the same bridge, with a plain
RTP leg (`rtp_leg.py`) attached in place of a second peer connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from callgate.media import internals
from callgate.media.packets import (
    CODEC_CLOCKS,
    ForwardTrack,
    MediaPacket,
    PacketHandler,
    tap_receiver,
)
from callgate.media.srtp_path import LocalTurn, SrtpPath

log = logging.getLogger(__name__)
FRAME_SECONDS = 0.02  # a prompt frame, in every codec

CLOSE_TIMEOUT = 3.0
MAX_EARLY_CANDIDATES = 50
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


def _only(codec: str) -> list[Any]:
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    return [c for c in codecs if c.mimeType.lower() == f"audio/{codec}"]


class Leg(Protocol):
    """What the bridge needs of a leg: where to send the other party's packets, and whether it
    can send yet."""

    name: str
    connected: asyncio.Event

    def send(self, packet: MediaPacket) -> None: ...  # the payload unchanged, our own RTP stream

    async def close(self) -> None: ...


class AnchorLeg:
    """One party's peer connection, ending at the anchor. `codec`: "opus" (default), "pcmu" or
    "pcma" — the only codec it negotiates; payloads are forwarded, never transcoded."""

    def __init__(
        self,
        name: str,
        servers: Sequence[Mapping[str, Any]],
        on_packet: PacketHandler,
        codec: str = "opus",
        local_turn: LocalTurn | None = None,
    ):
        if codec not in CODEC_CLOCKS:
            raise AnchorError(f"unknown codec {codec!r}")
        if changed := internals.problems():  # never anchor on internals we do not know
            raise AnchorError(f"media anchor disabled: aiortc/aioice changed ({changed[0]})")
        self.name = name
        self.codec = codec
        self.pc = RTCPeerConnection(_configuration(servers))
        self.track = ForwardTrack(CODEC_CLOCKS[codec])  # what this leg sends to its party
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self._tapped = 0  # packets that came through aiortc's path (before the lean one)
        self.path: SrtpPath | None = None  # the lean per-packet path, once DTLS-SRTP is up
        self._transceiver: Any = None
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

    def _prepare(self, transceiver: Any) -> None:
        transceiver.setCodecPreferences(_only(self.codec))
        transceiver.direction = "sendrecv"
        self._transceiver = transceiver
        tap_receiver(transceiver.receiver, self.name, self._packet)

    async def answer(self, offer_sdp: str) -> str:
        """The party offered: answer it (our codec only). Returns the answer SDP, ICE gathered."""
        # The transceiver exists before the offer is applied, so its codec preference filters
        # what the answer lists (aiortc negotiates codecs in setRemoteDescription).
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        self._prepare(transceiver)
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

    async def offer(self) -> str:
        """The anchor offers to the party (our codec only). Returns the offer SDP, ICE gathered."""
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        self._prepare(transceiver)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except (ValueError, AssertionError) as exc:
            raise AnchorError(f"bad answer: {exc}") from exc
        await self._flush_early()

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
        lean path (srtp_path.py; Opus) or aiortc's (G.711, or a leg that kept it)."""
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


class Bridge:
    """Two legs; each one's packets go to `observer`, then out of the other leg unchanged."""

    def __init__(
        self,
        ice_servers: IceServers,
        observer: PacketHandler | None = None,
        local_turn: LocalTurn | None = None,
    ) -> None:
        """`local_turn`: finds the allocations of the TURN server in `ice_servers` when it runs
        in this process, so the legs hand it their packets in-process (srtp_path.py)."""
        self._ice_servers = ice_servers
        self._observer = observer
        self._local_turn = local_turn
        self.legs: dict[str, AnchorLeg] = {}  # the WebRTC legs
        self._all: dict[str, Leg] = {}  # these and attached ones (an RTP leg)
        self._other: dict[str, Leg] = {}  # leg name -> the other leg
        self._muted: set[str] = set()  # legs hearing a prompt instead of the other party

    def leg(self, name: str, codec: str = "opus") -> AnchorLeg:
        """A new leg called `name` (at most two; the second is paired with the first)."""
        if name in self._all or len(self._all) >= 2:
            raise AnchorError(f"cannot add leg {name!r}")
        leg = AnchorLeg(name, self._ice_servers(), self._forward, codec, self._local_turn)
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
        if other is not None and other.connected.is_set() and other.name not in self._muted:
            other.send(packet)

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
