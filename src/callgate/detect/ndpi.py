"""Compare the detector with nDPI's verdicts (`ndpiReader` output, the `*.out` files of nDPI's
test suite) flow by flow.

nDPI labels a flow `MASTER.APP/…` (e.g. `STUN.SignalVoip`, `DTLS.GoogleCall`, `RTP`). A flow counts
as real-time communication (RTC) when a label component is a real-time protocol (STUN, RTP, RTCP,
SRTP, SIP) or one of nDPI's call applications (…Call, …Voip), or when nDPI puts a DTLS flow in its
VoIP/Video/Media category, or when nDPI's own line reports the "webrtc" or "c-webrtc" ALPN (RFC 8833
§3: WebRTC media and data over DTLS), or when nDPI labels a UDP flow Discord and its line reports the
"Client IP" its Discord dissector read from the voice server's IP Discovery response (Discord's
voice connection; nDPI's other ways to a "Discord" UDP label — an 8-byte packet, IP lists — print
no client IP and do not count). Application names are mapped to ours where nDPI names one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from callgate.detect.report import FlowResult

_FLOW = re.compile(
    r"^\s+\d+\s+(?P<proto>UDP|TCP)\s+(?P<a>\S+)\s+(?:<->|->)\s+(?P<b>\S+)\s+.*?"
    r"\[proto: (?:[^/\]]*:)?(?P<ids>[\d.]+)/(?P<label>[^\]]+)\]"
    r"(?:.*?\[cat: (?P<cat>[^/\]]+))?"
)
_ALPN = re.compile(r"ALPNs?: (?P<alpn>[^\]\[]+)\]")
_DISCORD_VOICE = re.compile(r"\[Client IP: [0-9A-Fa-f.:]+\]")
_RTC_ALPNS = {"webrtc", "c-webrtc"}  # RFC 8833 §3 (and §4 for confidential WebRTC)
_RTC_COMPONENTS = {"STUN", "RTP", "RTCP", "SRTP", "SIP"}
_RTC_CATEGORIES = {"VoIP", "Video", "Media"}
APP_NAMES = {
    "Skype_TeamsCall": "Microsoft Teams/Skype",
    "SkypeCall": "Microsoft Teams/Skype",  # nDPI before 4.0
    "GoogleCall": "Google Meet",
    "WhatsAppCall": "WhatsApp",
    "SignalVoip": "Signal",
    "FacebookVoip": "Facebook Messenger",
    "ViberVoip": "Viber",
    "Zoom": "Zoom",
    "Discord": "Discord",
}

FlowKey = tuple[str, tuple[str, int], tuple[str, int]]


@dataclass(frozen=True, slots=True)
class NdpiFlow:
    key: FlowKey
    label: str
    category: str
    rtc: bool
    app: str | None


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return str(ipaddress.ip_address(host.strip("[]"))), int(port)


def flow_key(proto: str, a: tuple[str, int], b: tuple[str, int]) -> FlowKey:
    low, high = sorted((a, b))
    return proto.lower(), low, high


def parse_out(path: Path) -> list[NdpiFlow]:
    """The UDP/TCP flows of one ndpiReader output, detected and undetected alike."""
    flows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _FLOW.match(line)
        if match is None:
            continue
        try:
            a, b = _endpoint(match["a"]), _endpoint(match["b"])
        except ValueError:
            continue  # nDPI prints some IPv6 addresses in a form that does not parse
        label = match["label"]
        parts = label.split(".")
        category = match["cat"] or ""
        rtc = (
            any(p in _RTC_COMPONENTS or p.endswith(("Call", "Voip")) for p in parts)
            or (parts[0] == "DTLS" and category in _RTC_CATEGORIES)
            or bool(_alpns(line) & _RTC_ALPNS)
            or _discord_voice(match["proto"], parts, line)
        )
        app = next((APP_NAMES[p] for p in parts if p in APP_NAMES), None)
        flows.append(NdpiFlow(flow_key(match["proto"], a, b), label, category, rtc, app))
    return flows


def _discord_voice(proto: str, parts: list[str], line: str) -> bool:
    """nDPI's Discord dissector keeps a client IP only from the 74-byte IP Discovery response on
    a UDP flow (ndpiReader prints it as "[Client IP: …]"), which Discord's voice servers send on
    the UDP connection that then carries the voice (Discord developer docs, Voice Connections)."""
    return proto == "UDP" and "Discord" in parts and _DISCORD_VOICE.search(line) is not None


def _alpns(line: str) -> set[str]:
    """The ALPN protocol IDs nDPI printed for a flow ("(Advertised) ALPNs: a;b", "ALPN: a")."""
    return {
        name.strip() for match in _ALPN.finditer(line) for name in re.split(r"[;,]", match["alpn"])
    }


@dataclass(frozen=True, slots=True)
class Pair:
    capture: str
    ndpi: NdpiFlow
    ours: FlowResult | None

    @property
    def ours_rtc(self) -> bool:
        return self.ours is not None and self.ours.rtc

    @property
    def agree(self) -> bool:
        return self.ndpi.rtc == self.ours_rtc


def pair_flows(capture: str, ndpi: list[NdpiFlow], ours: list[FlowResult]) -> list[Pair]:
    by_key = {flow_key(f.transport, (f.host, f.host_port), (f.peer, f.peer_port)): f for f in ours}
    return [Pair(capture, n, by_key.get(n.key)) for n in ndpi]


def _same_app(ours: str, theirs: str) -> bool:
    """nDPI has one label for Skype and Teams; we tell classic peer-to-peer Skype apart."""
    if theirs == "Microsoft Teams/Skype" and ours.startswith("Skype"):
        return True
    return ours.startswith(theirs)


@dataclass(frozen=True, slots=True)
class Scores:
    flows: int
    agreement: float
    precision: float
    recall: float
    app_agreement: float  # among flows where nDPI names an application and we call it RTC
    app_compared: int


def score(pairs: list[Pair]) -> Scores:
    tp = sum(p.ndpi.rtc and p.ours_rtc for p in pairs)
    fp = sum(not p.ndpi.rtc and p.ours_rtc for p in pairs)
    fn = sum(p.ndpi.rtc and not p.ours_rtc for p in pairs)
    agree = sum(p.agree for p in pairs)
    named = [p for p in pairs if p.ndpi.app and p.ours_rtc and p.ours is not None]
    app_ok = sum(p.ours is not None and _same_app(p.ours.app, p.ndpi.app or "?") for p in named)
    return Scores(
        flows=len(pairs),
        agreement=agree / len(pairs) if pairs else 1.0,
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / (tp + fn) if tp + fn else 1.0,
        app_agreement=app_ok / len(named) if named else 1.0,
        app_compared=len(named),
    )
