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
the server as a UDP forwarder.

A phone behind NAT names its private address (RFC 1918, or CGNAT's RFC 6598 range) in its SDP,
which nothing on our side can reach. When that address is not its signaling IP, `sip.allow_media`
does not cover it and the signaling IP is a permitted destination, `check` returns the SDP
aimed at the signaling IP instead, at the SDP's port (NATs usually keep the port): the NAT's
public address, where the phone's packets will come from. The RTP leg latches to the source of
its first packet from that IP (symmetric RTP, RFC 4961; media/rtp_leg.py), so a NAT that picked
another port is followed, and nothing is ever sent into a private range. With `sip.allow_media`
covering the range (phones on a LAN the server reaches directly) the SDP's address is used as
named.

A forbidden offer is refused with `488 Not Acceptable Here` and a `Warning` (RFC 3261 §21.4.26,
§20.43; RFC 3264 §6: an answerer that cannot take an offer refuses it), a forbidden answer
ends the call, and an RTP leg never latches to a source the filter refuses. The call handlers
judge every SDP through one function, `runtime/sip_media.check_media`, which also audits.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Any

from callgate.media.rtp_leg import RtpLeg
from callgate.sip.invite import InboundCall
from callgate.sip.sdp import AudioOffer, SdpError
from callgate.turn.peers import PeerFilter

MIN_PORT, MAX_PORT = 1024, 65534
WARN_AGENT = "callgate"
# The ranges a phone behind NAT has as its own address: RFC 1918 and CGNAT (RFC 6598)
NAT_INSIDE = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)


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

    def check(self, offer: AudioOffer, device: str | None = None) -> AudioOffer:
        """The SDP media may be sent where it says: RTP to its address and port, RTCP to its
        `a=rtcp` or the port after it; else ForbiddenMedia. `device`: the signaling source IP of
        a registered device, whose SDP must name that IP unless `sip.allow_media` covers the one
        it names; a device behind NAT naming its private address gets the SDP aimed at its
        signaling IP back (module doc). A held stream sends nowhere: nothing to refuse."""
        if offer.held:
            return offer
        offer = self._behind_nat(offer, device)
        self._address("media", offer.address, device)
        if not MIN_PORT <= offer.port <= MAX_PORT:
            raise ForbiddenMedia(f"media port {offer.port} is not permitted")
        if offer.rtcp is not None:
            self._address("RTCP", offer.rtcp[0], device)
            if not MIN_PORT <= offer.rtcp[1] <= MAX_PORT + 1:
                raise ForbiddenMedia(f"RTCP port {offer.rtcp[1]} is not permitted")
        return offer

    def _behind_nat(self, offer: AudioOffer, device: str | None) -> AudioOffer:
        """`offer` aimed at the device's signaling IP when it names its own private address
        from behind NAT (module doc), else unchanged."""
        if device is None or not self.permits(device):
            return offer

        def natted(address: str) -> bool:
            if address == device or self._devices.permits_listed(address):
                return False
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            return any(ip in net for net in NAT_INSIDE)

        if not natted(offer.address):
            return offer
        rtcp = offer.rtcp
        if rtcp is not None and natted(rtcp[0]):
            rtcp = (device, rtcp[1])
        return dataclasses.replace(offer, address=device, rtcp=rtcp)

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
