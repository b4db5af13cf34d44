"""The flow table: both directions of every flow seen, keyed by directional 5-tuple, in the order
flows were first seen, with the packet counters of the capture. `engine.Detector` owns one;
`batchfeed` and `Detector.packet` fill it."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from callgate.detect.flow import Endpoint, Flow
from callgate.detect.verdict import excluded_reason

_PORTS = struct.Struct("!HH")


def flow_key(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """The flow table's key of one direction of a 5-tuple."""
    return bytes((proto,)) + src + dst + _PORTS.pack(sport, dport)


@dataclass
class FlowTable:
    packets: int = 0
    skipped: int = 0  # packets that are not IP/UDP/TCP or cannot be decoded
    # `flow_key` of each direction of each flow → (flow, side)
    table: dict[bytes, tuple[Flow, int]] = field(default_factory=dict)
    flows: list[Flow] = field(default_factory=list)

    def new_flow(self, ts: float, proto: int, a: Endpoint, b: Endpoint) -> tuple[Flow, int]:
        """A flow first seen at `ts`, from `a` (side 0) to `b`."""
        flow = Flow(proto, a, b, ts, ts)
        flow.excluded = excluded_reason(proto, a, b)
        flow.done = flow.excluded is not None
        self.flows.append(flow)
        self.table[flow_key(proto, b[0], b[1], a[0], a[1])] = (flow, 1)
        entry = self.table[flow_key(proto, a[0], a[1], b[0], b[1])] = (flow, 0)
        return entry
