"""Prometheus metrics read from the relay's plain-integer counters at scrape time.

The data path only bumps integers on `TurnCounters`; `TurnCollector` turns them into metric
families whenever Prometheus scrapes, so the figures are live without any per-packet metric call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from callgate.turn.counters import TurnCounters
from callgate.types import Address

log = logging.getLogger(__name__)

PREFIX = "callgate_turn"
CounterSource = Callable[[], TurnCounters]

# (TurnCounters attribute, metric name without _total, help)
_SIMPLE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("allocations_total", "allocations", "Allocations created since start."),
    ("auth_failures", "auth_failures", "Requests refused for bad or missing credentials."),
    (
        "auth_throttled",
        "auth_throttled",
        "Requests refused (403) while their address or username is blocked after failed logins.",
    ),
    ("peers_refused", "peers_refused", "Permissions refused by the peer filter (403)."),
    ("malformed_dropped", "malformed_dropped", "Malformed packets dropped."),
    ("quota_rejections", "quota_rejections", "Allocations refused by a quota (486)."),
    ("bandwidth_dropped", "bandwidth_dropped", "Packets dropped by the bandwidth cap."),
    (
        "send_dropped",
        "send_dropped",
        "Packets dropped because a socket buffer or TCP backlog was full.",
    ),
    ("binding_requests", "binding_requests", "STUN Binding requests answered."),
    (
        "fast_path_packets",
        "fast_path_packets",
        "Channel data packets the kernel fast path forwarded (also in relayed_packets).",
    ),
    (
        "fast_path_passed",
        "fast_path_passed",
        "Packets the kernel fast path matched but left to the userspace relay.",
    ),
)


class TurnCollector:
    """A custom collector: one snapshot of the counters per scrape."""

    def __init__(self, source: CounterSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        c = self._source()
        yield GaugeMetricFamily(
            f"{PREFIX}_allocations_active", "Allocations alive now.", value=c.allocations_active
        )
        for attr, name, doc in _SIMPLE_COUNTERS:
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=getattr(c, attr))
        packets = CounterMetricFamily(
            f"{PREFIX}_relayed_packets",
            "Packets relayed (to_peer: client to peer; to_client: peer to client).",
            labels=["direction"],
        )
        packets.add_metric(["to_peer"], c.packets_to_peer)
        packets.add_metric(["to_client"], c.packets_to_client)
        yield packets
        relayed_bytes = CounterMetricFamily(
            f"{PREFIX}_relayed_bytes", "Payload bytes relayed by direction.", labels=["direction"]
        )
        relayed_bytes.add_metric(["to_peer"], c.bytes_to_peer)
        relayed_bytes.add_metric(["to_client"], c.bytes_to_client)
        yield relayed_bytes
        requests = CounterMetricFamily(
            f"{PREFIX}_requests", "STUN/TURN requests by method.", labels=["method"]
        )
        for method, count in sorted(c.requests.copy().items()):
            requests.add_metric([method], count)
        yield requests
        errors = CounterMetricFamily(
            f"{PREFIX}_error_responses", "Error responses by STUN error code.", labels=["code"]
        )
        for code, count in sorted(c.errors.copy().items()):
            errors.add_metric([str(code)], count)
        yield errors


class ClusterRefusalCollector:
    """What a node or relay ignored from Redis (runtime/cluster_seal.py): entries and messages
    between nodes by kind and reason (unsigned, forged, malformed, stale, replayed…)."""

    def __init__(self, source: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "callgate_cluster_refused",
            "Entries and messages from Redis ignored: not signed with the right key, "
            "stale, replayed or malformed.",
            labels=["kind", "reason"],
        )
        for (kind, reason), count in sorted(self._source().items()):
            refused.add_metric([kind, reason], count)
        yield refused


def build_registry(source: CounterSource, *, process: bool = True) -> CollectorRegistry:
    """A registry with the relay collector (and process/runtime metrics unless disabled)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TurnCollector(source))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition of `registry` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


@dataclass(slots=True)
class MetricsServer:
    """A running `/metrics` endpoint on its own thread (off the event loop)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def address(self) -> Address:
        host, port = self.server.server_address[:2]
        return (str(host), int(port))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(listen: Address, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on http://HOST:PORT/metrics (port 0 picks a free port)."""
    host, port = listen
    server, thread = start_http_server(port, addr=host, registry=registry)
    metrics = MetricsServer(server, thread)
    log.debug("metrics endpoint on %s:%d", *metrics.address)
    return metrics
