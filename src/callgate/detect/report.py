"""The report model: one row per internal host, application and external peer, plus a summary.

Plain classes (no dataclasses: see `flow.Flow`), rendered by `render.py` (table, JSON, CSV) and
`html.py`.
"""

from __future__ import annotations

from typing import NamedTuple


class FlowResult(NamedTuple):
    """One transport flow, oriented host → peer."""

    transport: str
    host: str
    host_port: int
    peer: str
    peer_port: int
    first_seen: float
    last_seen: float
    packets_out: int
    packets_in: int
    bytes_out: int
    bytes_in: int
    rtc: bool
    app: str
    path: str
    confidence: float
    protocols: tuple[str, ...]
    evidence: tuple[str, ...]
    media: tuple[str, ...]
    sanctioned: bool
    excluded: str | None
    server_name: str | None = None  # of a TLS or QUIC ClientHello on this flow


class Session:
    """Real-time traffic of one internal host with one peer address for one application."""

    FIELDS = ("host", "app", "peer", "sanctioned", "first_seen", "last_seen", "packets_out",
              "packets_in", "bytes_out", "bytes_in", "confidence", "paths", "media", "protocols",
              "evidence", "flows")  # in the constructor's order  # fmt: skip
    __slots__ = FIELDS

    def __init__(
        self, host: str, app: str, peer: str, sanctioned: bool, first_seen: float,
        last_seen: float, packets_out: int = 0, packets_in: int = 0, bytes_out: int = 0,
        bytes_in: int = 0, confidence: float = 0.0, paths: list[str] | None = None,
        media: list[str] | None = None, protocols: list[str] | None = None,
        evidence: list[str] | None = None, flows: int = 0,
    ) -> None:  # fmt: skip
        self.host = host
        self.app = app
        self.peer = peer
        self.sanctioned = sanctioned
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.packets_out = packets_out
        self.packets_in = packets_in
        self.bytes_out = bytes_out
        self.bytes_in = bytes_in
        self.confidence = confidence
        self.paths: list[str] = paths if paths is not None else []
        self.media: list[str] = media if media is not None else []
        self.protocols: list[str] = protocols if protocols is not None else []
        self.evidence: list[str] = evidence if evidence is not None else []
        self.flows = flows

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Session({', '.join(map(repr, self._fields()))})"

    @property
    def duration(self) -> float:
        return self.last_seen - self.first_seen

    @property
    def path(self) -> str:
        for kind in ("relayed", "p2p", "server"):
            if kind in self.paths:
                return kind
        return "unknown"

    def add(self, flow: FlowResult) -> None:
        self.first_seen = min(self.first_seen, flow.first_seen)
        self.last_seen = max(self.last_seen, flow.last_seen)
        self.packets_out += flow.packets_out
        self.packets_in += flow.packets_in
        self.bytes_out += flow.bytes_out
        self.bytes_in += flow.bytes_in
        self.confidence = max(self.confidence, flow.confidence)
        self.flows += 1
        for target, values in ((self.paths, (flow.path,)), (self.media, flow.media),
                               (self.protocols, flow.protocols), (self.evidence, flow.evidence)):  # fmt: skip
            target.extend(x for x in values if x not in target)


class Report:
    __slots__ = ("files", "flows", "packets", "sessions", "skipped", "warnings")

    def __init__(self, files: list[str], packets: int, skipped: int, flows: list[FlowResult],
                 sessions: list[Session], warnings: list[str]) -> None:  # fmt: skip
        self.files = files
        self.packets = packets
        self.skipped = skipped
        self.flows = flows
        self.sessions = sessions
        self.warnings = warnings

    @property
    def rtc_flows(self) -> list[FlowResult]:
        return [f for f in self.flows if f.rtc]

    def summary(self) -> dict[str, object]:
        unsanctioned = [s for s in self.sessions if not s.sanctioned]
        hosts = sorted({s.host for s in unsanctioned})
        apps = sorted({s.app for s in unsanctioned})
        return {
            "files": self.files,
            "packets": self.packets,
            "packets_not_ip_udp_tcp": self.skipped,
            "flows": len(self.flows),
            "rtc_flows": len(self.rtc_flows),
            "unsanctioned_sessions": len(unsanctioned),
            "sanctioned_sessions": len(self.sessions) - len(unsanctioned),
            "hosts_with_unsanctioned_rtc": hosts,
            "applications": apps,
            "warnings": self.warnings,
        }


def group_sessions(flows: list[FlowResult]) -> list[Session]:
    """RTC flows grouped per (host, application, peer address, sanctioned), by first seen."""
    sessions: dict[tuple[str, str, str, bool], Session] = {}
    for flow in flows:
        if not flow.rtc:
            continue
        key = (flow.host, flow.app, flow.peer, flow.sanctioned)
        session = sessions.get(key)
        if session is None:
            session = Session(flow.host, flow.app, flow.peer, flow.sanctioned,
                              flow.first_seen, flow.last_seen)  # fmt: skip
            sessions[key] = session
        session.add(flow)
    return sorted(sessions.values(), key=lambda s: (s.host, s.first_seen, s.app, s.peer))
