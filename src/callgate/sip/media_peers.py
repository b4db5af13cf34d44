"""Where the SIP edge may send media (docs/sip.md, "Media addresses").

A phone's or a carrier's SDP names the address and port our RTP leg sends to (RFC 4566 `c=`,
`m=`), and RTCP goes to its `a=rtcp` (RFC 3605) or the next port (RFC 3550 §11). Left unchecked, an authenticated phone
could point the server's media at loopback, the cloud metadata address or the internal network.
So every media destination is judged by the relay's peer filter (`turn.peers.PeerFilter`, the
same ranges refused by default, opened by `turn.allow_peers` and `sip.allow_media`, closed by
`turn.deny_peers`), and the port must be one a phone's RTP can use: 1024-65534 (below 1024 are
system services, RFC 6335 §6; RTCP needs the next port). An `a=rtcp` address and port pass the
same rules. A held stream (`c=0.0.0.0`, RFC 3264 §8.4) names no destination: it is taken, and
`aim` sends it nothing.

A registered device (a phone with a credential; not a trunk, whose addresses are configured) may
only name its own signaling source IP, unless `sip.allow_media` covers the address it names:
otherwise an authenticated phone could aim the other party's stream at any public host and use
the server as a UDP forwarder. A NATed phone whose SDP names its private address is still
served when `sip.allow_media` opens that range, the RTP leg latching to where its packets come
from (media/rtp_leg.py).

A forbidden offer is refused with `488 Not Acceptable Here` and a `Warning` (RFC 3261 §21.4.26,
§20.43; RFC 3264 §6: an answerer that cannot take an offer refuses it), a forbidden answer
ends the call, and an RTP leg never latches to a source the filter refuses. The call handlers
judge every SDP through one function, `runtime/sip_media.check_media`, which also audits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from callgate.media.rtp_leg import RtpLeg
from callgate.sip.invite import InboundCall
from callgate.sip.sdp import AudioOffer, SdpError
from callgate.turn.peers import PeerFilter

MIN_PORT, MAX_PORT = 1024, 65534
WARN_AGENT = "callgate"


class ForbiddenMedia(SdpError):
    """An SDP whose media destination the filter refuses."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        # RFC 3261 §20.43: warn-code SP warn-agent SP quoted warn-text; 399: miscellaneous
        self.warning: str | None = f'399 {WARN_AGENT} "{reason}"'


class MediaPeers:
    """The filter every SIP media destination passes (module doc)."""

    def __init__(self, peers: PeerFilter, devices: PeerFilter | None = None) -> None:
        """`devices`: the ranges (`sip.allow_media`) a device's SDP may name besides its own
        signaling source IP (module doc)."""
        self._peers = peers
        self._devices = devices or PeerFilter()

    def permits(self, host: str) -> bool:
        """Whether RTP/RTCP may be sent to, or latched from, `host`."""
        return self._peers.permits(host)

    def check(self, offer: AudioOffer, device: str | None = None) -> None:
        """Raise ForbiddenMedia unless we may send RTP to the SDP's address and port and RTCP
        to its `a=rtcp` or the port after it. `device`: the signaling source IP of a registered
        device, whose SDP must name that IP unless `sip.allow_media` covers the one it names
        (module doc). A held stream sends nowhere: nothing to refuse."""
        if offer.held:
            return
        self._address("media", offer.address, device)
        if not MIN_PORT <= offer.port <= MAX_PORT:
            raise ForbiddenMedia(f"media port {offer.port} is not permitted")
        if offer.rtcp is not None:
            self._address("RTCP", offer.rtcp[0], device)
            if not MIN_PORT <= offer.rtcp[1] <= MAX_PORT + 1:
                raise ForbiddenMedia(f"RTCP port {offer.rtcp[1]} is not permitted")

    def _address(self, what: str, address: str, device: str | None) -> None:
        if not self.permits(address):
            raise ForbiddenMedia(f"{what} address {address} is not permitted")
        if device is not None and address != device and not self._devices.permits_listed(address):
            raise ForbiddenMedia(f"{what} address {address} is not the device's signaling address")


def aim(rtp: RtpLeg, sdp: AudioOffer, also_from: Iterable[str]) -> None:
    """Send `rtp` where the party's SDP (checked first) says: its RTP address and port, RTCP to
    its `a=rtcp` or the next port. A held stream (c=0.0.0.0) is sent nothing; its packets are
    still taken from `also_from` (its signaling IP) until an SDP names an address."""
    if sdp.held:
        rtp.hold(also_from)
    else:
        rtp.set_remote((sdp.address, sdp.port), also_from, rtcp=sdp.rtcp)


def refusal_headers(exc: SdpError) -> list[tuple[str, str]]:
    """The Warning header that says why an offer was refused, when there is one."""
    return [("Warning", exc.warning)] if exc.warning else []


def forbidden_entry(
    party: str, call_id: str, stage: str, exc: ForbiddenMedia, source: str
) -> tuple[str, str, str, dict[str, Any]]:
    """The `sip.media.forbidden` audit entry: actor, action, object, details."""
    details = {"reason": str(exc), "stage": stage, "source": source}
    return party, "sip.media.forbidden", f"call:{call_id}", details


def device_source(call: InboundCall) -> str | None:
    """The signaling source IP of a device's INVITE, None for a trunk's (module doc)."""
    return None if call.trunk is not None else call.peer.address[0]


def party_of(call: InboundCall) -> str:
    """Who sent an INVITE: the device credential, or the trunk."""
    if call.trunk is not None:
        return f"trunk:{call.trunk.name}"
    return f"sip:{call.credential.username}" if call.credential is not None else "sip"
