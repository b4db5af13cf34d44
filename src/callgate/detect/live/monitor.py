"""`callgate monitor --interface IFACE`: the detector of `callgate detect` on live traffic.

Packets come from a TPACKET_V3 ring (ring.py) into one `Detector`; every `interval` seconds the
findings are recomputed and each real-time session that is new, or has new packets, is printed as
one JSON line (`"event": "session"`). The first line (`"event": "listening"`) says the ring is
bound; a last line (`"event": "summary"`) gives the counters. The
flow table is bounded (`max_flows`: the least recently active flows are evicted and counted), and
flows idle beyond the idle timeout are closed as in `detect`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.live.ring import Ring
from callgate.detect.report import Session

SessionKey = tuple[str, str, str, bool]


@dataclass(slots=True)
class MonitorArgs:
    interface: str
    internal: list[str] = field(default_factory=list)
    relays: list[str] = field(default_factory=list)
    interval: float = 1.0
    duration: float = 0.0  # 0: until interrupted
    max_flows: int = 100_000


def monitor(args: MonitorArgs, out: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
    """Watch the interface until `duration` ends (or KeyboardInterrupt), printing findings."""
    if not 0.05 <= args.interval <= 3600:
        raise ValueError(f"--interval: expected 0.05 to 3600 seconds, got {args.interval}")
    if args.max_flows < 16:
        raise ValueError(f"--max-flows: expected at least 16, got {args.max_flows}")
    detector = Detector([parse_network(n) for n in args.internal],
                        [parse_relay(r) for r in args.relays])  # fmt: skip
    detector.flows.max_flows = args.max_flows
    detector.files.append(f"interface {args.interface}")
    ring = Ring(args.interface)
    out.write(json.dumps({"event": "listening", "interface": args.interface}) + "\n")
    out.flush()
    shown: dict[SessionKey, int] = {}
    end = clock() + args.duration if args.duration else None
    try:
        due = clock() + args.interval
        while end is None or clock() < end:
            for packets in ring.blocks(timeout=min(args.interval, 0.2)):
                for ts, linktype, frame in packets:
                    detector.packet(ts, linktype, frame)
            if clock() >= due:
                _emit(detector, shown, out)
                due = clock() + args.interval
    except KeyboardInterrupt:
        pass
    finally:
        ring.close()
        _emit(detector, shown, out)
        table = detector.flows
        out.write(json.dumps({"event": "summary", "interface": args.interface,
                              "packets": table.packets, "flows": len(table.flows),
                              "closed_idle": table.closed, "evicted": table.evicted}) + "\n")  # fmt: skip
        out.flush()


def _emit(detector: Detector, shown: dict[SessionKey, int], out: TextIO) -> None:
    """One line per session that is new or has packets since it was last printed."""
    for session in detector.report().sessions:
        key = (session.host, session.app, session.peer, session.sanctioned)
        packets = session.packets_out + session.packets_in
        if shown.get(key) == packets:
            continue
        shown[key] = packets
        out.write(json.dumps(_line(session)) + "\n")
    out.flush()


def _line(session: Session) -> dict[str, object]:
    return {
        "event": "session", "host": session.host, "app": session.app, "peer": session.peer,
        "sanctioned": session.sanctioned, "first_seen": session.first_seen,
        "last_seen": session.last_seen, "packets_out": session.packets_out,
        "packets_in": session.packets_in, "bytes_out": session.bytes_out,
        "bytes_in": session.bytes_in, "confidence": session.confidence,
        "protocols": session.protocols, "paths": session.paths,
    }  # fmt: skip
