"""The one check of a SIP media destination, for every SDP the edge takes (docs/sip.md, "Media
addresses").

Offers in INVITEs from phones and trunks, re-offers in their re-INVITEs, answers from phones we
ring and from carriers we dial: each names where the server's RTP (and RTCP, the next port) will
go. Each passes `check_media`: the relay's peer filter and `sip.allow_media` (a registered
device may name only its own signaling IP), judged by `sip.media_peers.MediaPeers`; a refusal
is audited `sip.media.forbidden` (rate-limited per party by the edge) and raised as
`ForbiddenMedia`, whose `Warning` (RFC 3261 §20.43) goes with the `488` to an offer
(`take_offer`; the re-INVITE's 488 is `sip.invite`'s) or ends a call whose answer it was.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Literal

from callgate.media.rtp_leg import RtpLeg
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.media_peers import (
    WARN_AGENT,
    ForbiddenMedia,
    device_source,
    forbidden_entry,
    party_of,
    refusal_headers,
)
from callgate.sip.sdp import KEY_SALT, SUITE, AudioOffer, Crypto, SdpError, parse_audio
from callgate.sip.trunks import Trunk

log = logging.getLogger(__name__)

Stage = Literal["offer", "re-offer", "answer"]
DOWNGRADED = "sip.srtp.downgraded"  # the audit action of an emergency call answered plain RTP


def check_media(
    edge: SipEdge,
    sdp: AudioOffer,
    stage: Stage,
    party: str,
    call_id: str,
    source: str,
    device: str | None = None,
) -> AudioOffer:
    """`sdp`, or ForbiddenMedia, audited, unless RTP/RTCP may go where it says. `party`:
    `sip:DEVICE` or `trunk:NAME`; `source`: where its signaling came from; `device`: the
    signaling IP a registered device's SDP must name (None for trunks). A device behind NAT
    that names its private address gets `sdp` aimed at its signaling IP back (media_peers.py):
    use the returned SDP, not `sdp`."""
    try:
        return edge.media.check(sdp, device)
    except ForbiddenMedia as exc:
        # audit_soon: a re-INVITE's answer cannot wait; the entry is the edge's task
        edge.audit_soon(*forbidden_entry(party, call_id, stage, exc, source))
        raise


def check_call_media(edge: SipEdge, call: InboundCall, sdp: AudioOffer, stage: Stage) -> AudioOffer:
    """`check_media` for an offer or re-offer in a call a phone or trunk made to us."""
    party, source = party_of(call), call.peer.address[0]
    return check_media(edge, sdp, stage, party, call.call_id, source, device_source(call))


def take_offer(edge: SipEdge, call: InboundCall) -> tuple[AudioOffer, str] | None:
    """The INVITE's audio offer and the G.711 codec we take from it, or None when it was
    refused: `488 Not Acceptable Here` with the reason (RFC 3264 §6), and a `Warning` for a
    forbidden media destination or plain RTP from a trunk that requires SRTP."""
    try:
        offer = parse_audio(call.request.body)
        codec = offer.choose()
        if call.trunk is not None and call.trunk.srtp_required and offer.crypto is None:
            raise SrtpRequired(call.trunk.name)
        offer = check_call_media(edge, call, offer, "offer")
    except SdpError as exc:
        call.reject(488, f"Not Acceptable Here ({exc})", refusal_headers(exc))
        return None
    return offer, codec


def bridge_codecs(offer: AudioOffer, codec: str) -> tuple[str, ...]:
    """What the bridge's WebRTC leg for a phone's or carrier's call offers after `codec` (the
    one taken from `offer`): every other codec of the offer we forward, in its order, then
    Opus. A callee's phone that lacks the caller's first codec (a G.722-first phone calling a
    G.711-only one) answers with one it has: forwarded when the caller can send it, else
    transcoded (media/transcode.py); a WebRTC callee takes Opus, transcoded."""
    return (*(other for other in offer.ours() if other != codec), "opus")


def answered_codec(
    answer: AudioOffer, codecs: tuple[str, ...], ours: Crypto | None, who: str = "the phone"
) -> str:
    """The codec a phone's or carrier's (`who`) answer takes from our offer of `codecs`, with
    our SDES key `ours` (RTP/SAVP) or none (RTP/AVP); SdpError when the answer cannot be used:
    none of the codecs, plain RTP (or another crypto tag) to our SRTP offer, SRTP to a plain
    one, or our own key echoed back (RFC 4568 §6.1: each direction has its own master key)."""
    codec = next((c for c in answer.ours() if c in codecs), None)
    if codec is None:
        raise SdpError(f"{who}'s answer has none of the codecs offered")
    if ours is not None and answer.crypto is None:
        raise SdpError(f"{who} answered plain RTP to our SRTP offer (RTP/SAVP, SDES)")
    if ours is not None and answer.crypto is not None and answer.crypto.tag != ours.tag:
        raise SdpError(f"{who} answered SRTP without our key's tag {ours.tag} (RFC 4568 §5.1.2)")
    if ours is None and answer.crypto is not None:
        raise SdpError(f"{who} answered RTP/SAVP to a plain RTP offer")
    if ours is not None and answer.crypto is not None and answer.crypto.key_salt == ours.key_salt:
        raise SdpError(f"{who} answered with our own SRTP key")
    return codec


@contextlib.contextmanager
def carrier_sdp(call_id: str) -> Iterator[None]:
    """Taking a carrier's 2xx answer: any error is an `SdpError` (logged with its trace), so
    the caller's SdpError path ACKs and BYEs the carrier leg and finishes the CDR, never leaves
    the leg up with the CDR open (a bug in the parser or a check must not do that either)."""
    try:
        yield
    except SdpError:
        raise
    except Exception as exc:
        log.exception("sip: carrier answer of %s not taken", call_id)
        raise SdpError(f"carrier answer not taken ({type(exc).__name__})") from exc


def carrier_answer(
    answer: AudioOffer,
    codecs: tuple[str, ...],
    ours: Crypto | None,
    leg: RtpLeg,
    emergency: bool,
    downgraded: Callable[[], None] = lambda: None,
) -> str:
    """The codec of a carrier's answer to our offer of `codecs` (`ours`: our SDES key, when its
    trunk requires SRTP), its RTP leg keyed when SRTP (RFC 4568 §6.1); SdpError when the answer
    cannot be used (`answered_codec`: the caller ACKed its 2xx and now BYEs it). Except on an
    emergency call: a plain RTP answer to our SRTP offer is taken, logged and `downgraded`
    (its audit entry, `downgrade_audit`), never ended for it."""
    if emergency and ours is not None and answer.crypto is None:
        log.warning("sip: emergency call answered with plain RTP to our SRTP offer: connected")
        downgraded()
        ours = None
    codec = answered_codec(answer, codecs, ours, "the carrier")
    if ours is not None and answer.crypto is not None:
        leg.secure(answer.crypto.key_salt, ours.key_salt)
    return codec


def downgrade_audit(edge: SipEdge, trunk: str, call_id: str, record: str) -> Callable[[], None]:
    """The `sip.srtp.downgraded` audit entry of an emergency call through `trunk` (SIP
    Call-ID `call_id`, CDR `record`) its carrier answered with plain RTP to our SRTP offer:
    written whole, never rate-limited (the edge's task)."""
    details = {"trunk": trunk, "call_id": call_id, "record": record, "emergency": True}
    return lambda: edge.audits.soon(f"trunk:{trunk}", DOWNGRADED, f"call:{call_id}", details)


def encryption(leg: RtpLeg) -> str:
    """The CDR's `encryption` of a call to or from a number: its SIP leg's media, SDES-SRTP
    (RFC 4568) or plain RTP (docs/calling.md)."""
    return "sdes-srtp" if leg.outbound is not None else "rtp"


def carrier_key(trunk: Trunk) -> Crypto | None:
    """Our fresh SDES key (tag 1) for an INVITE through `trunk`, when it requires SRTP."""
    return Crypto(1, secrets.token_bytes(KEY_SALT)) if trunk.srtp_required else None


class SrtpRequired(SdpError):
    """Plain RTP offered by a trunk whose `srtp` is "required"."""

    def __init__(self, trunk: str) -> None:
        super().__init__(f"trunk {trunk} requires SRTP: RTP/SAVP with an a=crypto {SUITE} key")
        # RFC 3261 §20.43: 302 Incompatible transport protocol (RTP/AVP is not taken here)
        self.warning = f'302 {WARN_AGENT} "Incompatible transport protocol: RTP/SAVP required"'
