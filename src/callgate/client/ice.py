"""What the client reads out of, and builds for, aiortc: ICE configuration, selected pair, stats.

aiortc is untyped, so its objects cross this boundary as `Any`; what leaves it is plain data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})


def rtc_configuration(hello: Mapping[str, Any]) -> Any:
    """The RTCConfiguration for a call, built only from the server's `hello`.

    `iceServers` is always passed explicitly: aiortc replaces a missing (None) list with a public
    STUN server, and an empty list from the server must stay empty. aiortc 1.16 wants the
    `RTCIceTransportPolicy` member (the string "relay" raises KeyError).
    """
    servers = [_ice_server(entry) for entry in hello.get("ice_servers") or []]
    policy = str(hello.get("ice_transport_policy", "all"))
    if policy not in ("all", "relay"):
        raise ValueError(f"unknown ice_transport_policy {policy!r}")
    return RTCConfiguration(
        iceServers=servers,
        iceTransportPolicy=(
            RTCIceTransportPolicy.RELAY if policy == "relay" else RTCIceTransportPolicy.ALL
        ),
    )


def call_hello(hello: Mapping[str, Any], incoming: Mapping[str, Any]) -> Mapping[str, Any]:
    """The `hello` to configure one incoming call with: relay-only when the server says the call
    is (`call.incoming`'s `ice_transport_policy`, e.g. a policy rule), and the call's own ICE
    servers when it carries them (the caller's relay first: docs/scaling.md, "Separate
    relays"); else `hello` as it is."""
    out = dict(hello)
    if incoming.get("ice_transport_policy") == "relay":
        out["ice_transport_policy"] = "relay"
    servers = incoming.get("ice_servers")
    if isinstance(servers, list):
        out["ice_servers"] = servers
    return out


def _ice_server(entry: Any) -> Any:
    if not isinstance(entry, Mapping) or "urls" not in entry:
        raise ValueError(f"ice server without urls: {entry!r}")
    urls = entry["urls"]
    if not isinstance(urls, str | list):
        raise ValueError(f"ice server urls must be a string or a list: {urls!r}")
    username = entry.get("username")
    credential = entry.get("credential")
    return RTCIceServer(
        urls=urls,
        username=None if username is None else str(username),
        credential=None if credential is None else str(credential),
    )


def selected_candidate_types(pc: Any) -> tuple[str, str] | None:
    """(local, remote) candidate types of the nominated ICE pair, or None before nomination.

    Private access, documented: aiortc exposes no selected pair, so this walks
    RTCRtpSender.transport (RTCDtlsTransport) → .transport (RTCIceTransport) → ._connection
    (aioice.Connection) → ._nominated {component: CandidatePair}; a pair has .local_candidate
    and .remote_candidate (aioice.Candidate, with .type). Checked against aiortc 1.16 / aioice 0.10+.
    """
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport or transceiver.receiver.transport
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        nominated = getattr(connection, "_nominated", None) or {}
        for pair in nominated.values():
            return str(pair.local_candidate.type), str(pair.remote_candidate.type)
    return None


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # lower case, e.g. "opus"
    clock_rate: int


def negotiated_codec(answer_sdp: str) -> Codec | None:
    """The first audio codec of the answer (the one both sides send)."""
    lines = answer_sdp.splitlines()
    audio = next((line for line in lines if line.startswith("m=audio ")), None)
    if audio is None or len(audio.split()) < 4:
        return None
    payload_type = audio.split()[3]
    pattern = re.compile(rf"^a=rtpmap:{re.escape(payload_type)} ([^/\s]+)/(\d+)")
    for line in lines:
        match = pattern.match(line)
        if match:
            return Codec(match.group(1).lower(), int(match.group(2)))
    return None


def audio_streams(report: Mapping[str, Any], clock_rate: int) -> list[dict[str, Any]]:
    """`call.stats` streams from `pc.getStats()`.

    inbound: packets received, lost and jitter as we measure them. outbound: packets we sent,
    lost and jitter as the far side reports them in RTCP receiver reports, with the round trip
    time those reports give. aiortc reports jitter in RTP timestamp units; the RTT in seconds.
    """
    by_type: dict[str, Any] = {}
    for stats in report.values():
        if getattr(stats, "kind", "audio") == "audio":
            by_type.setdefault(stats.type, stats)
    rate = clock_rate or 48000

    def jitter_ms(stats: Any) -> float | None:
        value = getattr(stats, "jitter", None)
        return None if value is None else round(value * 1000 / rate, 2)

    remote_in = by_type.get("remote-inbound-rtp")
    rtt = getattr(remote_in, "roundTripTime", None)
    rtt_ms = None if rtt is None else round(rtt * 1000, 2)
    streams: list[dict[str, Any]] = []
    inbound = by_type.get("inbound-rtp")
    if inbound is not None:
        streams.append(
            {
                "kind": "audio",
                "direction": "inbound",
                "packets": int(inbound.packetsReceived),
                "packets_lost": max(0, int(inbound.packetsLost)),
                "jitter_ms": jitter_ms(inbound),
                "rtt_ms": rtt_ms,
            }
        )
    outbound = by_type.get("outbound-rtp")
    if outbound is not None:
        streams.append(
            {
                "kind": "audio",
                "direction": "outbound",
                "packets": int(outbound.packetsSent),
                "packets_lost": max(0, int(getattr(remote_in, "packetsLost", 0) or 0)),
                "jitter_ms": jitter_ms(remote_in) if remote_in is not None else None,
                "rtt_ms": rtt_ms,
            }
        )
    return streams
