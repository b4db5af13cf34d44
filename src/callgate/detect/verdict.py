"""From the evidence on each flow to a verdict: real-time or not, application, how sure, and the
path (peer-to-peer, relayed, server). Runs once after the capture is read, over all flows, so that
endpoints learned from STUN label flows seen before or after the STUN exchange alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from callgate.detect import skype
from callgate.detect.bayes import decide
from callgate.detect.decode import UDP
from callgate.detect.flow import RANDOM_LIKE, Endpoint, Flow
from callgate.detect.media import ALERTS
from callgate.detect.names import app_from_name
from callgate.detect.ranges import RangeList

# Well-known ports of protocols that are never calls but whose traffic can look like it
# (RFC 1035 DNS, RFC 6762 mDNS, RFC 4795 LLMNR, SSDP, RFC 5905 NTP, RFC 1002 NetBIOS, DHCP,
# DHCPv6, SNMP, syslog, IKE/IPsec NAT-T).
EXCLUDED_PORTS = {53: "DNS", 5353: "mDNS", 5355: "LLMNR", 1900: "SSDP", 123: "NTP",
                  137: "NetBIOS", 138: "NetBIOS", 139: "NetBIOS", 67: "DHCP", 68: "DHCP",
                  546: "DHCPv6", 547: "DHCPv6", 161: "SNMP", 162: "SNMP", 514: "syslog",
                  500: "IKE", 4500: "IPsec NAT-T"}  # fmt: skip
TUNNEL_PORTS = {1194, 51820}  # OpenVPN, WireGuard: opaque UDP that is not itself a call
STUN_PORTS = {3478, 3479, 5349, 19302, 19305}  # IANA stun/turn(s), Google's public STUN
P2P, RELAYED, SERVER, UNKNOWN = "p2p", "relayed", "server", "unknown"
CLASSIC_SKYPE = "Skype (classic peer-to-peer)"


class Verdict:
    """A flow's verdict (a plain class: see `stunscan.StunInfo`)."""

    __slots__ = ("app", "confidence", "evidence", "path", "protocols", "rtc", "sanctioned")

    def __init__(self, app: str | None = None) -> None:
        self.rtc = False
        self.confidence = 0.0
        self.path = UNKNOWN
        self.app = app
        self.protocols: list[str] = []
        self.evidence: list[str] = []
        self.sanctioned = False

    def add(self, confidence: float, protocol: str | None, evidence: str) -> None:
        self.rtc = True
        self.confidence = max(self.confidence, confidence)
        if protocol and protocol not in self.protocols:
            self.protocols.append(protocol)
        if evidence not in self.evidence:
            self.evidence.append(evidence)


def excluded_reason(proto: int, a: Endpoint, b: Endpoint) -> str | None:
    for port in (a[1], b[1]):
        name = EXCLUDED_PORTS.get(port)
        if name is not None and (proto == UDP or port == 53):
            return name
    return None


def own_verdict(flow: Flow) -> Verdict:
    """What the flow's own packets show (confidence: how specific the strongest evidence is)."""
    v = Verdict(app=flow.app)
    if flow.excluded or flow.quic:
        return v
    if flow.app_evidence:
        v.add(0.95, "STUN", flow.app_evidence)
    if flow.ice:
        v.add(0.9, "ICE", "ICE connectivity checks (USERNAME ufrag:ufrag, PRIORITY, ICE role)")
    if flow.turn or flow.channel_data >= 2:
        what = "TURN requests" if flow.turn else f"{flow.channel_data} TURN ChannelData messages"
        v.add(0.85, "TURN", what)
    if flow.stun and not (flow.ice or flow.turn):
        kind = "classic RFC 3489" if flow.stun_classic else "RFC 8489"
        v.add(0.6, "STUN", f"{flow.stun} {kind} STUN messages")
    if flow.ip_discovery:
        v.add(0.9, "IP Discovery", "Discord voice IP Discovery (74-byte request/response that "
              "opens Discord's voice UDP connection)")  # fmt: skip
    if flow.srtp:
        v.add(0.9, "DTLS-SRTP", "DTLS handshake offering use_srtp (RFC 5764)" + _dtls_outcome(flow))
    elif flow.dtls and flow.stun:
        v.add(0.8, "DTLS-SRTP", "DTLS on a STUN/ICE flow (RFC 7983 demultiplexing)")
    if flow.rtp:
        pts = ",".join(str(pt) for pt in sorted(flow.rtp_pt))
        both = "both directions" if all(flow.rtp_ok) else "one direction"
        v.add(0.8 if all(flow.rtp_ok) else 0.7, "RTP", f"RTP v2, stable SSRC, increasing "
              f"sequence numbers ({both}, payload type {pts})")  # fmt: skip
    if flow.rtcp >= 1 and (flow.rtcp >= 2 or flow.rtp or flow.stun):
        v.add(0.7, "RTCP", f"RTCP packets: {flow.rtcp}")
    if flow.sip:
        v.add(0.9, "SIP", "SIP request/status lines (RFC 3261)")
    v.path = _path(flow)
    return v


def _dtls_outcome(flow: Flow) -> str:
    """How the media handshake ended, when the capture shows it did not succeed: the offer was an
    attempt to set up media, not proof that media flowed."""
    if flow.dtls_alert is not None:
        name = ALERTS.get(flow.dtls_alert, f"description {flow.dtls_alert}")
        return f"; ended by a fatal alert ({name}): no media set up"
    if not flow.pkts[1]:
        return "; not answered in the capture (one direction only)"
    return ""


def _path(flow: Flow) -> str:
    if flow.turn or flow.channel_data >= 2:
        return RELAYED
    if flow.ice:
        return SERVER if flow.b[1] in STUN_PORTS or flow.a[1] in STUN_PORTS else P2P
    if flow.stun or flow.ip_discovery:  # IP Discovery is asked of Discord's voice server
        return SERVER
    return UNKNOWN


def propagate(
    flows: Iterable[Flow], verdicts: dict[Flow, Verdict], local: Callable[[Flow], int]
) -> None:
    """Label flows to endpoints learned from STUN (mapped, relayed, peer addresses; RFC 8489
    §14.2, RFC 8656 §18.5) and flows from a local socket that ran STUN/ICE (the same ICE session);
    spread a named application along the same links. `local(flow)` is the flow's local side."""
    flows = list(flows)
    learned: dict[Endpoint, tuple[str, Verdict]] = {}
    sockets: dict[Endpoint, Verdict] = {}
    for flow in flows:
        v = verdicts[flow]
        if not (v.rtc and flow.stun):
            continue
        for kind, ip, port in flow.addresses:
            if (ip, port) not in learned or (v.app and not learned[(ip, port)][1].app):
                learned[(ip, port)] = (kind, v)
        mine = _side(flow, local(flow))
        if flow.proto == UDP and (mine not in sockets or (v.app and not sockets[mine].app)):
            sockets[mine] = v
    for flow in flows:
        v = verdicts[flow]
        if flow.excluded or flow.quic:
            continue
        mine = _side(flow, local(flow))
        for end in (flow.a, flow.b):
            hit = learned.get(end)
            if hit is not None and end != mine and hit[1] is not v:
                kind, source = hit
                v.add(0.6, None, f"peer is a STUN {kind} address seen in another flow")
                v.app = v.app or source.app
                # Media to an address our relay allocated is still our relay (RFC 8656 §2.2).
                v.sanctioned = v.sanctioned or (source.sanctioned and kind == "relayed")
                if v.path == UNKNOWN:
                    v.path = RELAYED if kind in ("relayed", "peer") else P2P
        sibling = sockets.get(mine)
        if flow.proto == UDP and sibling is not None and sibling is not v:
            v.add(0.6, None, "same local UDP socket as a STUN/ICE flow")
            v.app = v.app or sibling.app
            if v.path == UNKNOWN:
                v.path = P2P


def _side(flow: Flow, index: int) -> Endpoint:
    return flow.a if index == 0 else flow.b


def classic_skype(
    flows: Iterable[Flow], verdicts: dict[Flow, Verdict], local: Callable[[Flow], int]
) -> None:
    """Classic Skype (skype.py): flows whose own messages show Skype's framing, then every flow
    of a local UDP socket that the framing or its anchored flows prove to be Skype's."""
    sockets: dict[Endpoint, list[Flow]] = {}
    for flow in flows:
        v = verdicts[flow]
        if v.rtc or not _opaque_udp(flow) or not flow.inspected:
            continue
        if flow.a[1] in skype.OTHER_PORTS or flow.b[1] in skype.OTHER_PORTS:
            continue
        sockets.setdefault(_side(flow, local(flow)), []).append(flow)
    for members in sockets.values():
        framed = {f: e for f in members if (e := skype.framing(f.skype_heads or ())) is not None}
        anchored = [f for f in members if f.skype_anchor is not None]
        heads = [f.skype_anchor for f in anchored if f.skype_anchor]
        peers = len({_side(f, 1 - local(f))[0] for f in anchored})
        shared = skype.socket_evidence(heads, peers, len(members))
        if shared is None and not framed:
            continue
        for flow in members:
            v = verdicts[flow]
            own = framed.get(flow)
            if own is not None:
                v.add(0.8, "Skype", own)
            if flow.skype_anchor is not None:
                v.add(0.7, "Skype", "opens with a Skype message (nDPI's historic Skype rule)")
            v.add(0.6, "Skype", shared or "same local UDP port as a flow with Skype's framing")
            v.app, v.path = CLASSIC_SKYPE, P2P
            shape = voice_shape(flow)
            if shape is not None:
                v.add(0.6, None, shape)
                flow.media.add("audio")


def name_from_ranges(
    flows: Iterable[Flow], verdicts: dict[Flow, Verdict], local: Callable[[Flow], int],
    ranges: RangeList,
) -> None:  # fmt: skip
    """Name real-time flows nothing else named whose peer is in a vendor's published media
    range (ranges.py)."""
    for flow in flows:
        v = verdicts[flow]
        if not v.rtc or v.app or v.sanctioned:
            continue
        ip, port = _side(flow, 1 - local(flow))
        hit = ranges.app_for(ip, "udp" if flow.proto == UDP else "tcp", port)
        if hit is not None:
            v.app = hit.app
            v.evidence.append(
                f"peer in {hit.app}'s published range {hit.network} ({ranges.origin})"
            )


NAME_WINDOW = 300.0  # seconds around a call in which the host's server names count


def name_from_servers(
    flows: Iterable[Flow], verdicts: dict[Flow, Verdict], local: Callable[[Flow], int]
) -> None:
    """Name real-time flows no media evidence named from the calling services the same internal
    host opened (TLS or QUIC server name) within NAME_WINDOW of the call; only when exactly one
    service fits, so a host in a Zoom call that also has Teams open stays unnamed."""
    flows = list(flows)
    opened: dict[bytes, list[tuple[float, float, str, str]]] = {}
    for flow in flows:
        app = app_from_name(flow.server_name) if flow.server_name else None
        if app is not None:
            host = _side(flow, local(flow))[0]
            opened.setdefault(host, []).append((flow.first, flow.last, app, flow.server_name or ""))
    for flow in flows:
        v = verdicts[flow]
        if not v.rtc or v.app or v.sanctioned:
            continue
        near = [(app, name) for first, last, app, name in opened.get(_side(flow, local(flow))[0], ())
                if first - NAME_WINDOW <= flow.last and flow.first <= last + NAME_WINDOW]  # fmt: skip
        if len({app for app, _ in near}) == 1:
            v.app = near[0][0]
            v.evidence.append(f"the host opened {near[0][1]} (TLS/QUIC server name) around it")


def _opaque_udp(flow: Flow) -> bool:
    """UDP that no protocol claimed: not excluded, not QUIC, SIP, DTLS or a VPN tunnel."""
    return not (flow.proto != UDP or flow.excluded or flow.quic or flow.sip or flow.dtls
                or flow.vpn or flow.a[1] in TUNNEL_PORTS or flow.b[1] in TUNNEL_PORTS)  # fmt: skip


def statistical(flow: Flow, v: Verdict) -> None:
    """Low-confidence fallback for opaque UDP that looks like a voice stream: sustained both ways,
    voice by the naive Bayes classifier (bayes.py), ciphertext-like payloads."""
    if v.rtc or not _opaque_udp(flow):
        return  # a VPN carries anything, calls included: nothing to say about the tunnel itself
    shape = voice_shape(flow)
    random_like = bool(flow.random_samples) and min(flow.random_samples) >= RANDOM_LIKE
    if shape is not None and random_like:
        v.add(0.3, "statistical", f"{shape}, random payloads")


def voice_shape(flow: Flow) -> str | None:
    """A sustained two-way stream (≥ 25 packets each way over ≥ 3 s, roughly symmetric) whose
    windows Bonfiglio et al.'s naive Bayes classifier takes for voice: its evidence, or None."""
    duration = flow.last - flow.first
    up, down = flow.pkts
    if min(up, down) < 25 or duration < 3.0 or min(up, down) / max(up, down) < 0.3:
        return None
    voice = decide(flow.voice)
    if voice is None:
        return None
    return f"{voice}; {up}/{down} packets over {duration:.0f} s"
