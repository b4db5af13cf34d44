"""The detector: captures in, report out. Streams packets into a flow table, inspects the first
packets of each flow, then decides once at the end (`verdict.py`) and orients each flow from the
internal host's side. Files of `batch_from` bytes or more are read in batches with numpy
(`capture.read.read_batches` → `batchfeed.py`), or through the compiled loops without numpy
when they were built (`pcapfeed.py`); smaller ones packet by packet (`packet`, the same
logic one packet at a time), which spares them importing numpy — most of a small capture's CPU
time. Both give the same report (tests/unit/detect/test_detect_batch.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from callgate.detect import native
from callgate.detect.capture import PcapReader, Progress
from callgate.detect.decode import UDP
from callgate.detect.flow import Flow
from callgate.detect.flowtable import FlowTable
from callgate.detect.ranges import RangeList, default_ranges
from callgate.detect.report import FlowResult, Report, group_sessions
from callgate.detect.verdict import (
    Verdict,
    classic_skype,
    name_from_ranges,
    name_from_servers,
    own_verdict,
    propagate,
    statistical,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Files at least this large are read in batches with numpy. Below it, reading packet by packet
# (≈ 3 µs a packet) costs less than importing numpy (≈ 0.1 CPU-s) and the batches for usual
# traffic (slices of bench/detect_vs_ndpi.py's capture, 2 / 4 / 8 MiB: 0.10 / 0.14 / 0.20 CPU-s
# packet by packet, 0.19 / 0.21 / 0.27 in batches, whole process), about the same for the
# smallest frames (4 MiB of 60-byte UDP packets, 55 000: 0.22 against 0.19).
BATCH_FROM = 4 * 1024 * 1024


class Relay(NamedTuple):
    """An allow-listed relay (our callgate/TURN server): host, and port (0 = any port)."""

    ip: bytes
    port: int


def parse_relay(text: str) -> Relay:
    """HOST:PORT, [V6]:PORT or a bare address; a clear ValueError otherwise."""
    host, _, port = text.rpartition(":") if text.count(":") == 1 or "]" in text else (text, "", "")
    host = host.strip("[]") if host else text
    try:
        ip = ipaddress.ip_address(host).packed
        number = int(port) if port else 0
    except ValueError:
        raise ValueError(f"--allow-relay: expected IP:PORT or [IPv6]:PORT, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--allow-relay: port out of range in {text!r}")
    return Relay(ip, number)


def parse_network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"--internal: expected a CIDR such as 10.0.0.0/8, got {text!r}") from None


class Detector:
    """Captures in, report out (a plain class, as the rest of detect's start-up path: see
    `flow.Flow`)."""

    def __init__(
        self,
        internal: list[Network] | None = None,
        relays: list[Relay] | None = None,
        *,
        ranges: RangeList | None = None,
        batch_from: int = BATCH_FROM,
    ) -> None:
        self.internal: list[Network] = internal if internal is not None else []
        self.relays: list[Relay] = relays if relays is not None else []
        self.files: list[str] = []
        self.warnings: list[str] = []
        self.flows = FlowTable()
        self.ranges = ranges  # vendor address ranges; None: the shipped ones
        self.batch_from = batch_from  # files of this many bytes or more are read in batches
        self._internal_cache: dict[bytes, bool] = {}
        self._text_cache: dict[bytes, str] = {}  # address → its text

    def read(self, path: Path, progress: Progress | None = None) -> None:
        """Feed one capture file (CaptureError when it cannot be read at all)."""
        reader = PcapReader(path, progress)
        if _size(path) < self.batch_from:
            self.feed(reader)
        elif native.enabled() and _feed_compiled(self.flows, reader):
            pass  # through the compiled loops, without numpy (pcapfeed.py)
        else:
            from callgate.detect.batchfeed import feed_batch  # numpy: only for large files
            from callgate.detect.capture.read import read_batches

            for batch in read_batches(reader):
                feed_batch(self.flows, batch)
        self.files.append(str(path))
        self.warnings.extend(reader.warnings)

    def feed(self, packets: Iterable[tuple[float, int, bytes]]) -> None:
        """Count and inspect packets given as (timestamp, link type, frame)."""
        for ts, linktype, frame in packets:
            self.packet(ts, linktype, frame)

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        """One packet (`FlowTable.packet`)."""
        self.flows.packet(ts, linktype, frame)

    # ---- decision ----
    def report(self) -> Report:
        flows = self.flows.flows
        verdicts = {flow: own_verdict(flow) for flow in flows}
        for flow, v in verdicts.items():
            v.sanctioned = self._to_relay(flow)
        propagate(flows, verdicts, self._local_side)
        classic_skype(flows, verdicts, self._local_side)
        for flow, v in verdicts.items():
            statistical(flow, v)
        if self.ranges is None:
            self.ranges = default_ranges()
        name_from_ranges(flows, verdicts, self._local_side, self.ranges)
        name_from_servers(flows, verdicts, self._local_side)
        results = [self._result(flow, verdicts[flow]) for flow in flows]
        return Report(self.files, self.flows.packets, self.flows.skipped, results,
                      group_sessions(results), self.warnings)  # fmt: skip

    def _to_relay(self, flow: Flow) -> bool:
        return any(
            relay.ip == ip and relay.port in (0, port)
            for relay in self.relays
            for ip, port in (flow.a, flow.b)
        )

    def is_internal(self, ip: bytes) -> bool:
        known = self._internal_cache.get(ip)
        if known is None:
            address = (ipaddress.IPv4Address if len(ip) == 4 else ipaddress.IPv6Address)(ip)
            if self.internal:
                known = any(address in net for net in self.internal)
            else:  # default: private, loopback, link-local, ULA (RFC 1918, RFC 4193, …)
                known = address.is_private
            self._internal_cache[ip] = known
        return known

    def _text(self, ip: bytes) -> str:
        text = self._text_cache.get(ip)
        if text is None:
            # IPv4 written as ipaddress writes it, without building an address object per host
            text = ".".join(map(str, ip)) if len(ip) == 4 else str(ipaddress.ip_address(ip))
            self._text_cache[ip] = text
        return text

    def _local_side(self, flow: Flow) -> int:
        """0 or 1: the internal end (the initiator when both or neither are internal)."""
        return 1 if self.is_internal(flow.b[0]) and not self.is_internal(flow.a[0]) else 0

    def _result(self, flow: Flow, v: Verdict) -> FlowResult:
        side = self._local_side(flow)
        host, peer = (flow.a, flow.b) if side == 0 else (flow.b, flow.a)
        app = v.app or _unnamed(v)
        if v.sanctioned:
            app = f"{v.app} via allow-listed relay" if v.app else "allow-listed relay"
        return FlowResult(
            transport="udp" if flow.proto == UDP else "tcp",
            host=self._text(host[0]), host_port=host[1],
            peer=self._text(peer[0]), peer_port=peer[1],
            first_seen=flow.first, last_seen=flow.last,
            packets_out=flow.pkts[side], packets_in=flow.pkts[1 - side],
            bytes_out=flow.octets[side], bytes_in=flow.octets[1 - side],
            rtc=v.rtc, app=app if v.rtc else "", path=v.path if v.rtc else "",
            confidence=round(v.confidence, 2), protocols=tuple(v.protocols),
            evidence=tuple(v.evidence), media=tuple(sorted(flow.media)) if v.rtc else (),
            sanctioned=v.sanctioned and v.rtc, excluded=flow.excluded,
            server_name=flow.server_name,
        )  # fmt: skip


def _feed_compiled(flows: FlowTable, reader: PcapReader) -> bool:
    from callgate.detect.pcapfeed import feed_pcap

    return feed_pcap(flows, reader)


def _size(path: Path) -> int:
    """The file's size; 0 when it cannot be read (the reader then reports why)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _unnamed(v: Verdict) -> str:
    """A label for RTC traffic whose application nothing named."""
    for protocol, label in (("ICE", "unidentified WebRTC/ICE"), ("TURN", "unidentified TURN"),
                            ("SIP", "SIP VoIP"), ("DTLS-SRTP", "unidentified WebRTC"),
                            ("RTP", "unidentified RTP"), ("RTCP", "unidentified RTP"),
                            ("STUN", "unidentified STUN"),
                            ("statistical", "unidentified voice-like UDP")):  # fmt: skip
        if protocol in v.protocols:
            return label
    return "unidentified real-time"


def detect(
    paths: Iterable[Path],
    internal: Iterable[str] = (),
    relays: Iterable[str] = (),
    progress: Callable[[Path], Progress | None] | None = None,
    ranges: RangeList | None = None,
) -> Report:
    """Library entry point: read every capture, return the report."""
    detector = Detector([parse_network(n) for n in internal], [parse_relay(r) for r in relays])
    if ranges is not None:
        detector.ranges = ranges
    for path in paths:
        detector.read(path, progress(path) if progress else None)
    return detector.report()
