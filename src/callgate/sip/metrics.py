"""Prometheus metrics of the SIP edge (`--metrics`): what it received, refused and answered."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from callgate.sip.edge import SipEdge


class SipCollector:
    def __init__(self, edge: SipEdge) -> None:
        self._edge = edge

    def collect(self) -> Iterator[Metric]:
        edge, counters = self._edge, self._edge.counters
        for name, help_text, value in (
            ("callgate_sip_messages_received", "SIP messages received", counters.received),
            ("callgate_sip_messages_malformed", "SIP messages refused unparsed (400, 505, 513)",
             counters.malformed),
            ("callgate_sip_messages_oversize", "SIP messages over the size limits (513)",
             counters.oversize),
            ("callgate_sip_keepalives", "Keep-alives answered (CRLF pings, STUN Bindings: RFC "
             "5626 §3.5)", counters.keepalives),
            ("callgate_sip_connections_refused", "TCP/TLS connections refused at the limit",
             counters.refused_connections),
            ("callgate_sip_invites_limited", "INVITEs refused over a device's INVITE rate (503)",
             edge.invite_limits.refused),
            ("callgate_sip_attempts_unrecorded", "Refused INVITEs past the per-address record "
             "limit (counted, no CDR)", edge.attempts.unrecorded if edge.attempts else 0),
        ):  # fmt: skip
            yield CounterMetricFamily(name, help_text, value=value)
        responses = CounterMetricFamily(
            "callgate_sip_responses", "Final responses sent, by status code", labels=["status"]
        )
        for status, count in sorted(counters.by_status.items()):
            responses.add_metric([str(status)], count)
        yield responses
        now = edge.clock.monotonic()
        yield GaugeMetricFamily(
            "callgate_sip_bindings",
            "Registered contacts now",
            value=len(edge.registrar.bindings(now)),
        )
        yield GaugeMetricFamily(
            "callgate_sip_calls", "INVITE dialogs open now", value=len(edge.calls)
        )
        yield from _trunks(edge)


def _trunks(edge: SipEdge) -> Iterator[Metric]:
    """Per trunk: channels in use, attempts, refusals at the limits (alert on their rate)."""
    limits = edge.trunk_limits
    calls = GaugeMetricFamily(
        "callgate_sip_trunk_calls", "Calls on the trunk now (this node's)", labels=["trunk"]
    )
    for trunk in edge.trunks.all:
        calls.add_metric([trunk.name], limits.active[trunk.name])
    yield calls
    attempts = CounterMetricFamily(
        "callgate_sip_trunk_attempts", "Call attempts per trunk", labels=["trunk", "direction"]
    )
    for (trunk_name, direction), count in sorted(limits.attempts.items()):
        attempts.add_metric([trunk_name, direction], count)
    yield attempts
    refused = CounterMetricFamily(
        "callgate_sip_trunk_refused",
        "Calls refused at a trunk's limits (calls: 486, rate: 503; a user's share: user-calls 403, user-hour 503; "
        "unavailable: the cluster's limits unreachable, 503)",
        labels=["trunk", "limit"],
    )
    for (trunk_name, limit), count in sorted(limits.refused.items()):
        refused.add_metric([trunk_name, limit], count)
    yield refused
    yield from _reachability(edge)


def _reachability(edge: SipEdge) -> Iterator[Metric]:
    """Per pinged trunk (trunk_pings.py): up (1) or down (0) once known, the last round trip,
    and the OPTIONS sent and answered (alert on `callgate_sip_trunk_up == 0`)."""
    up = GaugeMetricFamily(
        "callgate_sip_trunk_up", "The carrier answers OPTIONS (1) or not (0)", labels=["trunk"]
    )
    rtt = GaugeMetricFamily(
        "callgate_sip_trunk_options_rtt_seconds",
        "Round trip of the last answered OPTIONS",
        labels=["trunk"],
    )
    pings = CounterMetricFamily(
        "callgate_sip_trunk_options", "OPTIONS pings sent", labels=["trunk", "result"]
    )
    for name, health in sorted(edge.pings.health.items()):
        if health.up is not None:
            up.add_metric([name], 1 if health.up else 0)
        if health.rtt_s is not None:
            rtt.add_metric([name], health.rtt_s)
        pings.add_metric([name, "answered"], health.answered)
        pings.add_metric([name, "unanswered"], health.pings - health.answered)
    yield up
    yield rtt
    yield pings
