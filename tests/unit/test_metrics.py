"""Metrics: the collector reads TurnCounters at scrape time, so figures are live."""

from __future__ import annotations

import urllib.request

from callgate.metrics import build_registry, render, serve_metrics
from callgate.turn.counters import TurnCounters


def test_collector_reflects_counters_live() -> None:
    counters = TurnCounters()
    registry = build_registry(lambda: counters, process=False)
    assert registry.get_sample_value("callgate_turn_allocations_active") == 0
    assert registry.get_sample_value("callgate_turn_allocations_total") == 0

    counters.allocations_total = 7
    counters.allocations_active = 3
    counters.packets_to_peer = 100
    counters.bytes_to_peer = 17_600
    counters.packets_to_client = 90
    counters.bytes_to_client = 15_840
    counters.auth_failures = 4
    counters.peers_refused = 2
    counters.malformed_dropped = 5
    counters.quota_rejections = 1
    counters.bandwidth_dropped = 6
    counters.binding_requests = 11
    counters.requests["allocate"] = 9
    counters.requests["refresh"] = 2
    counters.errors[401] = 4
    counters.errors[403] = 2

    value = registry.get_sample_value
    assert value("callgate_turn_allocations_active") == 3
    assert value("callgate_turn_allocations_total") == 7
    assert value("callgate_turn_relayed_packets_total", {"direction": "to_peer"}) == 100
    assert value("callgate_turn_relayed_packets_total", {"direction": "to_client"}) == 90
    assert value("callgate_turn_relayed_bytes_total", {"direction": "to_peer"}) == 17_600
    assert value("callgate_turn_relayed_bytes_total", {"direction": "to_client"}) == 15_840
    assert value("callgate_turn_auth_failures_total") == 4
    assert value("callgate_turn_peers_refused_total") == 2
    assert value("callgate_turn_malformed_dropped_total") == 5
    assert value("callgate_turn_quota_rejections_total") == 1
    assert value("callgate_turn_bandwidth_dropped_total") == 6
    assert value("callgate_turn_binding_requests_total") == 11
    assert value("callgate_turn_requests_total", {"method": "allocate"}) == 9
    assert value("callgate_turn_requests_total", {"method": "refresh"}) == 2
    assert value("callgate_turn_error_responses_total", {"code": "401"}) == 4

    counters.allocations_active = 0  # a later scrape sees the change
    assert value("callgate_turn_allocations_active") == 0


def test_source_is_called_per_scrape() -> None:
    holder = {"counters": TurnCounters(allocations_total=1)}
    registry = build_registry(lambda: holder["counters"], process=False)
    assert registry.get_sample_value("callgate_turn_allocations_total") == 1
    holder["counters"] = TurnCounters(allocations_total=2)
    assert registry.get_sample_value("callgate_turn_allocations_total") == 2


def test_text_exposition_and_http_endpoint() -> None:
    counters = TurnCounters(allocations_active=2)
    registry = build_registry(lambda: counters)
    body, content_type = render(registry)
    assert content_type.startswith("text/plain")
    assert b"# TYPE callgate_turn_allocations_active gauge" in body
    assert b"process_cpu_seconds_total" in body

    server = serve_metrics(("127.0.0.1", 0), registry)
    try:
        host, port = server.address
        assert port != 0
        counters.allocations_active = 5
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        assert "callgate_turn_allocations_active 5.0" in text
    finally:
        server.stop()
