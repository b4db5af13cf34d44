"""A batch of packets into a `FlowTable`, with the per-packet semantics of `Detector.packet` kept
exactly:

1. decode every frame (`batchdecode`; unusual shapes through `decode.decode`);
2. group the batch's packets by directional 5-tuple (numpy), and look each distinct 5-tuple up in
   the flow table once, creating flows in the order their first packet arrived;
3. payloads of flows still being inspected go through `flow.inspect` one by one, in order, per
   flow, until the flow is decided (with the packet counts `inspect` would see at that packet);
4. every packet adds to its flow's packet, byte and last-seen counters, summed per 5-tuple with
   numpy (decided and excluded flows — nearly all of a large capture — cost nothing more).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from callgate.detect.batchdecode import FAST, SKIP, SLOW, V6, Fields, decode_batch
from callgate.detect.capture.batch import Batch
from callgate.detect.decode import TCP, decode
from callgate.detect.flow import INSPECT_LIMIT, Flow, inspect
from callgate.detect.flowtable import FlowTable, add_counts, flow_key
from callgate.detect.native import enabled as compiled

_K1, _K2, _K3 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F),
                 np.uint64(0x165667B19E3779F9))  # fmt: skip
I64 = npt.NDArray[np.int64]


def endpoint_code(ip: bytes, port: int) -> int:
    """`batchdecode`'s endpoint code for an address decoded by `decode.decode`."""
    if len(ip) == 4:
        return (int.from_bytes(ip, "big") << 16) | port
    mask = (1 << 64) - 1
    hi, lo = int.from_bytes(ip[:8], "big"), int.from_bytes(ip[8:], "big")
    h = ((hi * int(_K1)) & mask) ^ ((lo * int(_K2)) & mask)
    h ^= h >> 29
    return ((h << 16) & mask) | int(V6) | port


def feed_batch(table: FlowTable, batch: Batch) -> None:
    count = len(batch.start)
    if count and table.idle and float(batch.ts.max() - batch.ts.min()) > table.idle:
        # a flow may fall idle inside this batch: one packet at a time (sparse captures only)
        for i in range(count):
            start = int(batch.start[i])
            frame = bytes(batch.data[start : start + int(batch.caplen[i])])
            table.packet(float(batch.ts[i]), int(batch.linktype[i]), frame)
        return
    table.packets += count
    f = decode_batch(batch)
    slow = _decode_slow(batch, f)
    idx = np.flatnonzero(f.kind != SKIP)
    table.skipped += count - len(idx)
    if not idx.size:
        return
    first, inv = _group(batch, f, idx, slow)
    flows, sides, live = _lookup(table, batch, f, idx[first], slow)
    _inspect_live(batch, f, idx, inv, flows, sides, live, slow)
    _count_bulk(batch, idx, inv, flows, sides)


def _decode_slow(batch: Batch, f: Fields) -> dict[int, tuple[bytes, bytes, bytes]]:
    """decode.decode for the SLOW frames: packet → (source ip, destination ip, payload)."""
    found: dict[int, tuple[bytes, bytes, bytes]] = {}
    for i in np.flatnonzero(f.kind == SLOW).tolist():
        start = int(batch.start[i])
        frame = bytes(batch.data[start : start + int(batch.caplen[i])])
        decoded = decode(int(batch.linktype[i]), frame)
        if decoded is None:
            f.kind[i] = SKIP
            continue
        proto, src, sport, dst, dport, payload = decoded
        f.proto[i] = proto
        f.src[i] = endpoint_code(src, sport)
        f.dst[i] = endpoint_code(dst, dport)
        f.plen[i] = len(payload)
        found[i] = (src, dst, payload)
    return found


def _group(
    batch: Batch, f: Fields, idx: I64, slow: dict[int, tuple[bytes, bytes, bytes]]
) -> tuple[I64, I64]:
    """(first packet of each distinct directional 5-tuple, position in `idx` order; the group of
    every packet). Grouped on a hash of the endpoint codes, then checked member by member, so a
    hash collision cannot merge two flows (the batch is then grouped exactly, more slowly)."""
    if compiled() and not any(int(f.src[i]) & int(V6) for i in slow):
        return _group_compiled(batch, f, idx)
    src, dst, proto = f.src[idx], f.dst[idx], f.proto[idx].astype(np.uint64)
    h = src * _K1 ^ dst * _K2 ^ proto * _K3
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    rep = first[inv]
    same = (src[rep] == src) & (dst[rep] == dst) & (proto[rep] == proto)
    v6 = np.flatnonzero((src & V6) != 0)
    if v6.size:
        addrs = _addresses(batch, f, idx, v6, slow)
        same[v6] &= np.all(addrs[v6] == addrs[rep[v6]], axis=1)
    if not same.all():
        return _group_exactly(batch, f, idx, slow)
    return first, inv


def _group_compiled(batch: Batch, f: Fields, idx: I64) -> tuple[I64, I64]:
    """`hotloops.group`: a hash table over the 5-tuples, exact (IPv6 addresses compared in the
    chunk: the caller keeps IPv6 packets decoded by decode.py, whose addresses are not there,
    for the numpy grouping). Groups are numbered in order of their first packet."""
    from callgate.detect import hotloops

    first = np.empty(len(idx), dtype=np.int64)
    inv = np.empty(len(idx), dtype=np.int64)
    groups = hotloops.group(batch.data, f.kind[idx], f.src[idx], f.dst[idx], f.proto[idx],
                            f.addr[idx], f.alen[idx], first, inv)  # fmt: skip
    return first[:groups], inv


def _addresses(
    batch: Batch, f: Fields, idx: I64, v6: I64, slow: dict[int, tuple[bytes, bytes, bytes]]
) -> npt.NDArray[np.uint8]:
    """Source and destination address bytes (32) of the IPv6 packets `v6` (positions in idx)."""
    out = np.zeros((len(idx), 32), dtype=np.uint8)
    raw = batch.raw()
    window = np.lib.stride_tricks.as_strided(raw, shape=(len(raw) - 31, 32), strides=(1, 1))
    packets = idx[v6]
    fast = f.kind[packets] == FAST
    out[v6[fast]] = window[f.addr[packets[fast]]]
    for pos in v6[~fast].tolist():
        src, dst, _ = slow[int(idx[pos])]
        out[pos] = np.frombuffer(src + dst, dtype=np.uint8)
    return out


def _group_exactly(
    batch: Batch, f: Fields, idx: I64, slow: dict[int, tuple[bytes, bytes, bytes]]
) -> tuple[I64, I64]:
    seen: dict[bytes, int] = {}
    first: list[int] = []
    inv = np.empty(len(idx), dtype=np.int64)
    for pos, i in enumerate(idx.tolist()):
        key = _key(batch, f, i, slow)
        group = seen.get(key)
        if group is None:
            group = seen[key] = len(first)
            first.append(pos)
        inv[pos] = group
    return np.array(first, dtype=np.int64), inv


def _endpoints(
    batch: Batch, f: Fields, i: int, slow: dict[int, tuple[bytes, bytes, bytes]]
) -> tuple[int, bytes, int, bytes, int]:
    """(transport, source ip, source port, destination ip, destination port) of packet i."""
    hit = slow.get(i)
    if hit is not None:
        src, dst = hit[0], hit[1]
    else:
        addr, size = int(f.addr[i]), int(f.alen[i])
        src = bytes(batch.data[addr : addr + size])
        dst = bytes(batch.data[addr + size : addr + 2 * size])
    return int(f.proto[i]), src, int(f.src[i]) & 0xFFFF, dst, int(f.dst[i]) & 0xFFFF


def _key(batch: Batch, f: Fields, i: int, slow: dict[int, tuple[bytes, bytes, bytes]]) -> bytes:
    proto, src, sport, dst, dport = _endpoints(batch, f, i, slow)
    return flow_key(proto, src, sport, dst, dport)


def _lookup(
    flowtable: FlowTable,
    batch: Batch,
    f: Fields,
    reps: I64,
    slow: dict[int, tuple[bytes, bytes, bytes]],
) -> tuple[list[Flow], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per group: its flow (created in first-packet order when new), side, and whether the flow
    was still being inspected when the batch began."""
    groups = len(reps)
    flows: list[Flow] = [None] * groups  # type: ignore[list-item]
    sides = np.zeros(groups, dtype=np.int64)
    live = np.zeros(groups, dtype=bool)
    seen: set[int] = set()  # flows met earlier in this batch
    for group in np.argsort(reps).tolist():
        i = int(reps[group])
        proto, src, sport, dst, dport = _endpoints(batch, f, i, slow)
        entry = flowtable.batch_lookup(seen, float(batch.ts[i]), proto, (src, sport), (dst, dport))
        flows[group], sides[group] = entry
        live[group] = not entry[0].done
    return flows, sides, live


def _inspect_live(
    batch: Batch, f: Fields, idx: I64, inv: I64, flows: list[Flow], sides: I64,
    live: npt.NDArray[np.bool_], slow: dict[int, tuple[bytes, bytes, bytes]],
) -> None:  # fmt: skip
    """Payloads of undecided flows through `inspect`, in order per flow, until the flow is
    decided — as `Detector.packet` does. All packets are counted afterwards (`_count_bulk`);
    while inspecting, a flow's packet counts are those `Detector.packet` would have at that
    packet (`inspect` reads them)."""
    pos = np.flatnonzero(live[inv])
    if not pos.size:
        return
    owner: dict[int, int] = {}  # one id per flow: both directions of a flow are two groups
    room: list[int] = []  # inspections a flow can still take
    for flow in flows:
        if owner.setdefault(id(flow), len(owner)) == len(room):
            room.append(INSPECT_LIMIT - flow.inspected)
    ids = np.array([owner[id(flow)] for flow in flows])[inv[pos]]
    order = np.argsort(ids.astype(np.uint16) if len(room) < 1 << 16 else ids, kind="stable")
    pos, ids = pos[order], ids[order]
    side = sides[inv[pos]]
    # per packet, within its flow's packets of this batch: packets of each side before it, and
    # payloads before it (beyond its room a flow is decided: the rest are not inspected)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    run = np.repeat(starts, np.diff(np.r_[starts, len(pos)]))
    ones = np.cumsum(side) - side
    before1 = ones - ones[run]
    before0 = (np.arange(len(pos)) - run) - before1
    carry = f.plen[idx[pos]] > 0
    payloads: I64 = np.cumsum(carry) - carry
    rank: I64 = payloads - payloads[run]
    keep = np.flatnonzero(carry & (rank < np.array(room)[ids]))
    if not keep.size:
        return
    packets = idx[pos[keep]]
    kept = ids[keep]
    cuts = np.flatnonzero(kept[1:] != kept[:-1]) + 1
    heads = np.r_[0, cuts]
    side_k = side[keep]
    # per payload: the packets of each side its flow has seen by then in this batch (itself too)
    seen0 = (before0[keep] + (side_k == 0)).tolist()
    seen1 = (before1[keep] + side_k).tolist()
    side_l, numbers = side_k.tolist(), packets.tolist()
    stamps = batch.ts[packets].tolist()
    starts = f.payload[packets]
    offsets, ends = starts.tolist(), (starts + f.plen[packets]).tolist()
    data = batch.data
    for a, b, g in zip(heads.tolist(), [*cuts.tolist(), len(kept)],
                       inv[pos[keep][heads]].tolist(), strict=True):  # fmt: skip
        flow = flows[g]
        pkts = flow.pkts
        base0, base1 = pkts
        stream = flow.proto == TCP
        for k in range(a, b):
            if flow.done:
                break
            pkts[0] = base0 + seen0[k]
            pkts[1] = base1 + seen1[k]
            hit = slow.get(numbers[k]) if slow else None
            payload = hit[2] if hit is not None else bytes(data[offsets[k] : ends[k]])
            inspect(flow, side_l[k], payload, stream, stamps[k])
        pkts[0], pkts[1] = base0, base1


def _count_bulk(batch: Batch, packets: I64, groups: I64, flows: list[Flow], sides: I64) -> None:
    """Packets, bytes and last-seen time per group, added to each group's flow and side."""
    if not packets.size:
        return
    size = len(flows)
    counts = np.bincount(groups, minlength=size)
    octets = np.bincount(groups, weights=batch.caplen[packets], minlength=size)
    last = np.full(size, -np.inf)
    np.maximum.at(last, groups, batch.ts[packets])
    add_counts(
        flows, sides.tolist(), counts.tolist(), octets.astype(np.int64).tolist(), last.tolist()
    )  # every group has a packet
