"""`callgate monitor --interface IFACE`: the detector of `callgate detect` on live traffic.

Packets come from a TPACKET_V3 ring (ring.py) into one `Detector`; every `interval` seconds the
findings are recomputed and each real-time session that is new, or has new packets, is printed as
one JSON line (`"event": "session"`). The first line (`"event": "listening"`) says the ring is
bound; a last line (`"event": "summary"`) gives the counters. The
flow table is bounded (`max_flows`: the least recently active flows are evicted and counted), and
flows idle beyond `idle_timeout` are closed as in `detect`; `lists` replaces the shipped vendor
ranges as `detect --lists` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.flowtable import IDLE_TIMEOUT
from callgate.detect.live.ring import Ring
from callgate.detect.ranges import RangeList, load_ranges
from callgate.detect.report import FlowResult, Session

SessionKey = tuple[str, str, str, bool]


@dataclass(slots=True)
class MonitorArgs:
    interface: str
    internal: list[str] = field(default_factory=list)
    relays: list[str] = field(default_factory=list)
    interval: float = 1.0
    duration: float = 0.0  # 0: until interrupted
    max_flows: int = 100_000
    idle_timeout: float = IDLE_TIMEOUT  # 0: never
    lists: Path | None = None  # vendor ranges replacing the shipped ones


def monitor(args: MonitorArgs, out: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
    """Watch the interface until `duration` ends (or KeyboardInterrupt), printing findings.
    ValueError for bad options, RangeError for a bad `lists` file, both before the ring opens."""
    if not 0.05 <= args.interval <= 3600:
        raise ValueError(f"--interval: expected 0.05 to 3600 seconds, got {args.interval}")
    if args.max_flows < 16:
        raise ValueError(f"--max-flows: expected at least 16, got {args.max_flows}")
    if not 0 <= args.idle_timeout <= 86400 * 365:
        raise ValueError(f"--idle-timeout: expected seconds (0 = never), got {args.idle_timeout}")
    ranges: RangeList | None = load_ranges(args.lists) if args.lists is not None else None
    detector = Detector([parse_network(n) for n in args.internal],
                        [parse_relay(r) for r in args.relays])  # fmt: skip
    detector.flows.max_flows = args.max_flows
    detector.flows.idle = args.idle_timeout
    if ranges is not None:
        detector.ranges = ranges
    detector.files.append(f"interface {args.interface}")
    ring = Ring(args.interface)
    out.write(json.dumps({"event": "listening", "interface": args.interface}) + "\n")
    out.flush()
    watch = Watch(detector)
    end = clock() + args.duration if args.duration else None
    try:
        due = clock() + args.interval
        while end is None or clock() < end:
            for packets in ring.blocks(timeout=min(args.interval, 0.2)):
                for ts, linktype, frame in packets:
                    detector.packet(ts, linktype, frame)
            if clock() >= due:
                _emit(watch, out)
                due = clock() + args.interval
    except KeyboardInterrupt:
        pass
    finally:
        ring.close()
        _emit(watch, out)
        table = detector.flows
        out.write(json.dumps({"event": "summary", "interface": args.interface,
                              "packets": table.packets, "flows": len(table.flows),
                              "closed_idle": table.closed, "evicted": table.evicted}) + "\n")  # fmt: skip
        out.flush()


def _emit(watch: Watch, out: TextIO) -> None:
    """One line per session that is new or has packets since it was last printed."""
    changes = watch.changes()
    for change in changes:
        out.write(json.dumps(_line(change.session)) + "\n")
    watch.commit(changes)
    out.flush()


@dataclass(frozen=True, slots=True)
class Change:
    """A session that is new, or has packets since it was last taken: the counters it gained
    since then (never negative: a session whose flows were evicted shrinks, then grows again)."""

    session: Session
    packets_out: int
    packets_in: int
    bytes_out: int
    bytes_in: int
    # what a block list needs: "udp/3478" per relay or server port, "udp/*" for a p2p peer
    targets: tuple[str, ...] = ()


Counters = tuple[int, int, int, int]


class Watch:
    """What changed in the detector's findings since the last `commit`: `callgate monitor` prints
    the changes, `serve` stores them (runtime/monitoring.py)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.taken: dict[SessionKey, Counters] = {}
        self._present: set[SessionKey] = set()

    def changes(self) -> list[Change]:
        found = []
        self._present = set()
        report = self.detector.report()
        targets = _targets(report.flows)
        for session in report.sessions:
            key = _key(session)
            self._present.add(key)
            now = (session.packets_out, session.packets_in, session.bytes_out, session.bytes_in)
            before = self.taken.get(key)
            if before == now:
                continue
            gained = (
                now
                if before is None
                else tuple(max(0, n - b) for n, b in zip(now, before, strict=True))
            )
            out, in_, bytes_out, bytes_in = gained
            found.append(Change(session, out, in_, bytes_out, bytes_in,
                                tuple(sorted(targets.get(key, ())))))  # fmt: skip
        return found

    def new(self, changes: list[Change]) -> list[Change]:
        """Those of `changes` (the last `changes()`) never taken: findings seen for the first
        time (or again after all their flows were evicted), worth writing at once."""
        return [c for c in changes if _key(c.session) not in self.taken]

    def commit(self, changes: list[Change]) -> None:
        """The changes were handled: the next `changes()` counts from here. Sessions gone from
        the report (all their flows evicted) are forgotten: memory stays bounded by the flow
        table, and one that comes back with new flows counts them from zero."""
        for key in self.taken.keys() - self._present:
            del self.taken[key]
        for change in changes:
            s = change.session
            self.taken[_key(s)] = (s.packets_out, s.packets_in, s.bytes_out, s.bytes_in)


def _key(session: Session) -> SessionKey:
    return (session.host, session.app, session.peer, session.sanctioned)


def _targets(flows: list[FlowResult]) -> dict[SessionKey, set[str]]:
    """Per session, the transports and peer ports its flows used (any port for p2p peers, who
    pick new ports per call): the rules `--format nftables` writes for it."""
    found: dict[SessionKey, set[str]] = {}
    for flow in flows:
        if flow.rtc:
            port = "*" if flow.path == "p2p" else str(flow.peer_port)
            key = (flow.host, flow.app, flow.peer, flow.sanctioned)
            found.setdefault(key, set()).add(f"{flow.transport}/{port}")
    return found


def _line(session: Session) -> dict[str, object]:
    return {
        "event": "session", "host": session.host, "app": session.app, "peer": session.peer,
        "sanctioned": session.sanctioned, "first_seen": session.first_seen,
        "last_seen": session.last_seen, "packets_out": session.packets_out,
        "packets_in": session.packets_in, "bytes_out": session.bytes_out,
        "bytes_in": session.bytes_in, "confidence": session.confidence,
        "protocols": session.protocols, "paths": session.paths,
    }  # fmt: skip
