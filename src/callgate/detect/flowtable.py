"""The flow table: both directions of every flow seen, keyed by directional 5-tuple, in the order
flows were first seen, with the packet counters of the capture. `engine.Detector` owns one;
`batchfeed` (a batch at a time) and `packet` (one packet) fill it.

A flow idle for longer than `idle` seconds is closed: the next packet of its 5-tuple starts a new
flow, and both are reported (a 5-tuple reused hours later is another conversation)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from callgate.detect.decode import TCP, decode
from callgate.detect.flow import Endpoint, Flow, inspect
from callgate.detect.verdict import excluded_reason

_PORTS = struct.Struct("!HH")
IDLE_TIMEOUT = 180.0  # seconds without a packet after which a flow is closed


def flow_key(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    """The flow table's key of one direction of a 5-tuple."""
    return bytes((proto,)) + src + dst + _PORTS.pack(sport, dport)


class FlowTable:
    """(A plain class, as the rest of detect's start-up path: see `flow.Flow`.)"""

    def __init__(self, *, idle: float = IDLE_TIMEOUT, max_flows: int = 0) -> None:
        self.packets = 0
        self.skipped = 0  # packets that are not IP/UDP/TCP or cannot be decoded
        # `flow_key` of each direction of each flow → (flow, side)
        self.table: dict[bytes, tuple[Flow, int]] = {}
        self.flows: list[Flow] = []
        self.idle = idle  # 0: flows are never closed
        self.closed = 0  # flows closed for idleness (a later packet started a new flow)
        self.max_flows = max_flows  # 0: unbounded; else the least recently active are evicted
        self.evicted = 0
        # payloads `packet` inspected (the live path's sign that findings may have changed;
        # the batch readers do not count them)
        self.inspections = 0

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        """One packet: decode, find or create its flow, count; inspect until the flow is decided.
        (`batchfeed.py` does the same for a whole batch.)"""
        self.packets += 1
        decoded = decode(linktype, frame)
        if decoded is None:
            self.skipped += 1
            return
        proto, src, sport, dst, dport, payload = decoded
        flow, side = self.lookup(ts, proto, (src, sport), (dst, dport), check_idle=True)
        flow.pkts[side] += 1
        flow.octets[side] += len(frame)
        if ts > flow.last:
            flow.last = ts
        if payload and not flow.done:
            self.inspections += 1
            inspect(flow, side, payload, proto == TCP, ts)

    def lookup(
        self, ts: float, proto: int, src: Endpoint, dst: Endpoint, *, check_idle: bool
    ) -> tuple[Flow, int]:
        """The flow and side of a packet from `src` to `dst` at `ts`: a new flow when the 5-tuple
        is new, or (`check_idle`) when its flow has been idle for longer than `idle`."""
        entry = self.table.get(flow_key(proto, src[0], src[1], dst[0], dst[1]))
        if entry is not None and check_idle and self.idle and ts - entry[0].last > self.idle:
            self.closed += 1
            entry = None
        return entry if entry is not None else self.new_flow(ts, proto, src, dst)

    def batch_lookup(
        self, seen: set[int], ts: float, proto: int, src: Endpoint, dst: Endpoint
    ) -> tuple[Flow, int]:
        """`lookup` for the first packet of a 5-tuple in a batch (`batchfeed.py`, `pcapfeed.py`):
        `seen` holds the flows met earlier in the batch, whose `last` is not updated until the
        batch ends; a batch spans at most `idle` seconds, so only a flow's first packet in it
        can follow an idle gap, and the idle check applies to flows not met yet."""
        entry = self.table.get(flow_key(proto, src[0], src[1], dst[0], dst[1]))
        if entry is None or id(entry[0]) not in seen:
            entry = self.lookup(ts, proto, src, dst, check_idle=True)
            seen.add(id(entry[0]))
        return entry

    def new_flow(self, ts: float, proto: int, a: Endpoint, b: Endpoint) -> tuple[Flow, int]:
        """A flow first seen at `ts`, from `a` (side 0) to `b`."""
        if self.max_flows and len(self.flows) >= self.max_flows:
            self._evict()
        flow = Flow(proto, a, b, ts, ts)
        flow.excluded = excluded_reason(proto, a, b)
        flow.done = flow.excluded is not None
        self.flows.append(flow)
        self.table[flow_key(proto, b[0], b[1], a[0], a[1])] = (flow, 1)
        entry = self.table[flow_key(proto, a[0], a[1], b[0], b[1])] = (flow, 0)
        return entry

    def _evict(self) -> None:
        """Drop the least recently active eighth of the flows (at least one): a flood of new
        5-tuples costs one sort per `max_flows / 8` flows, and memory stays bounded."""
        count = max(1, len(self.flows) // 8)
        ordered = sorted(self.flows, key=lambda flow: flow.last)
        gone = {id(flow) for flow in ordered[:count]}
        self.flows = [flow for flow in self.flows if id(flow) not in gone]
        for key in [key for key, (flow, _) in self.table.items() if id(flow) in gone]:
            del self.table[key]
        self.evicted += count


def add_counts(
    flows: Iterable[Flow], sides: Iterable[int], counts: Iterable[int], octets: Iterable[int],
    last: Iterable[float],
) -> None:  # fmt: skip
    """A batch's packets, bytes and latest time per 5-tuple added to its flow and side (the
    compiled path, `pcapfeed.py`, and the numpy one, `batchfeed.py`)."""
    for flow, side, n, size, stamp in zip(flows, sides, counts, octets, last, strict=True):
        flow.pkts[side] += n
        flow.octets[side] += size
        if stamp > flow.last:
            flow.last = stamp
