"""Unmanaged-calling detection inside `callgate serve` (`[monitor]`, `--monitor IFACE`;
docs/detection.md, "Inside serve").

A capture process (detect/live/worker.py, started with "spawn") reads the interface's TPACKET_V3
ring into the detector of `callgate detect`, so packet inspection never holds this server's
interpreter lock; every `interval_s` it sends the sessions that are new or grew (detect/live/
monitor.py `Watch`). A thread here adds them to `detect_findings` (records/findings.py, which
audits fresh unsanctioned findings in the same transaction), answers whether they were stored (a
write that fails is offered again at the next interval) and alerts: syslog from the thread, the
webhook through the event loop. `Monitoring` bundles it with the API router, the Prometheus
collector and the alert senders.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess as SpawnProcess
from typing import Any

from fastapi import APIRouter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy.exc import SQLAlchemyError

from callgate.api.routes.findings import FindingsFeed, findings_router
from callgate.config import MonitorSettings, Settings
from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.live import worker
from callgate.detect.live.monitor import Change
from callgate.detect.live.worker import WorkerConfig
from callgate.errors import ConfigError
from callgate.records.audit import AuditLog
from callgate.records.findings import FindingRepository, FindingRow
from callgate.runtime.alerts import SyslogSender, WebhookSender
from callgate.storage.db import Store

log = logging.getLogger(__name__)
WILDCARDS = ("0.0.0.0", "::")
START_TIMEOUT = 30.0  # seconds for the capture process to start and bind its ring
PURGE_EVERY_S = 3600.0  # how often findings older than monitor.retention_days are deleted
STOP_TIMEOUT = 15.0


def own_relays(settings: Settings) -> list[str]:
    """This server's relays, never reported as unmanaged: its TURN listeners (unless on a
    wildcard address), its relay addresses (any port), and `monitor.allow_relays`."""
    turn = settings.turn
    relays = [
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for host, port in [*turn.listen, *turn.tls_listen, *settings.monitor.allow_relays]
        if host not in WILDCARDS
    ]
    relays += [ip for ip in (turn.relay_ip, turn.relay_ip6) if ip]
    return relays


class LiveMonitor:
    """The capture process (detect/live/worker.py) and the thread that stores what it sends."""

    def __init__(
        self, settings: MonitorSettings, relays: list[str], repository: FindingRepository,
        alert: Callable[[FindingRow], None], stored: Callable[[], None] = lambda: None,
    ) -> None:  # fmt: skip
        assert settings.interface is not None
        self.interface = settings.interface
        self.config = WorkerConfig(self.interface, tuple(settings.internal), tuple(relays),
                                   settings.interval_s, settings.max_flows,
                                   settings.idle_timeout_s)  # fmt: skip
        self.repository, self.alert, self.stored = repository, alert, stored
        self.retention = timedelta(days=settings.retention_days)
        self._purged_at = -PURGE_EVERY_S  # monotonic time of the last purge: purge at start
        self.fresh = {True: 0, False: 0}  # fresh findings stored, by sanctioned
        self.write_errors = 0
        self.error: str | None = None
        self.counters: dict[str, int] = {}
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._stop = self._context.Event()
        self._process: SpawnProcess | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the capture process; ConfigError when it cannot open the interface."""
        conn, child = self._context.Pipe()
        process = self._context.Process(target=worker.run, args=(self.config, child, self._stop),
                                        name="callgate-monitor", daemon=True)  # fmt: skip
        process.start()
        child.close()
        first = conn.recv() if conn.poll(START_TIMEOUT) else ("error", "did not start in time")
        if first[0] != "ready":
            process.join(5)
            if process.is_alive():
                process.kill()
            conn.close()
            raise ConfigError(f"monitor.interface (--monitor): {first[1]}")
        self._process = process
        self._thread = threading.Thread(target=self._pump, args=(conn,), name="detect-monitor",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._stop.set()
        if self._process is not None:
            self._process.join(STOP_TIMEOUT)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)

    def _pump(self, conn: Connection) -> None:
        """Store each update the capture process sends, answer whether it was stored, alert."""
        try:
            while True:
                message = conn.recv()
                if message[0] == "error":
                    self.error = str(message[1])
                    log.error("the monitor on %s stopped: %s", self.interface, self.error)
                    continue
                _, changes, counters = message
                self.counters = counters
                if changes:
                    conn.send(self.update(changes))
                if time.monotonic() - self._purged_at >= PURGE_EVERY_S:
                    self.purge()
        except (EOFError, OSError):
            if not self._stopping and self.error is None:
                code = self._process.exitcode if self._process is not None else None
                self.error = f"the capture process exited (code {code})"
                log.error("the monitor on %s stopped: %s", self.interface, self.error)
        finally:
            conn.close()

    def purge(self) -> None:
        """Delete the findings not seen within `monitor.retention_days` (retried next hour)."""
        self._purged_at = time.monotonic()
        try:
            gone = self.repository.purge(datetime.now(UTC) - self.retention)
        except SQLAlchemyError as exc:
            log.error("old monitor findings not deleted (retried in an hour): %s", exc)
            return
        if gone:
            log.info("deleted %d monitor findings not seen for %s", gone, self.retention)

    def update(self, changes: list[Change]) -> bool:
        """Store the changes and alert on fresh findings; False when they could not be stored
        (the capture process offers them again at the next interval)."""
        try:
            rows = self.repository.record(self.interface, changes)
        except SQLAlchemyError as exc:
            self.write_errors += 1
            log.error("monitor findings not stored (retried next interval): %s", exc)
            return False
        self.stored()  # wakes the console's long polls (api/routes/findings.py)
        for row in rows:
            self.fresh[row.sanctioned] += 1
            if not row.sanctioned:
                self.alert(row)
        return True

    def status(self) -> dict[str, Any]:
        counters = {"packets": 0, "flows": 0, "flows_evicted": 0, "flows_closed_idle": 0,
                    "ring_drops": 0, "early_writes": 0, "early_deferred": 0,
                    **self.counters}  # fmt: skip
        return {
            "enabled": True, "interface": self.interface, "running": self.error is None,
            "error": self.error, **counters, "write_errors": self.write_errors,
        }  # fmt: skip


@dataclass
class Monitoring:
    """The monitor (None when `monitor.interface` is unset), its router, collector and alerts."""

    monitor: LiveMonitor | None
    router: APIRouter
    syslog: SyslogSender | None
    webhook: WebhookSender | None

    def collector(self) -> MonitorCollector:
        return MonitorCollector(self)

    async def stop(self) -> None:
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.stop)
        if self.webhook is not None:
            await self.webhook.stop()
        if self.syslog is not None:
            self.syslog.close()


def start_monitoring(settings: Settings, store: Store) -> Monitoring:
    """Open the interface (ConfigError when it cannot be) and start the thread and the alerts."""
    config = settings.monitor
    repository = FindingRepository(store)
    syslog = SyslogSender(config.syslog) if config.syslog else None
    webhook = None
    if config.webhook_url and config.webhook_secret:
        secret = config.webhook_secret.get_secret_value().encode()
        webhook = WebhookSender(config.webhook_url, secret, attempts=config.webhook_attempts,
                                timeout=config.webhook_timeout_s)  # fmt: skip
    loop = asyncio.get_running_loop()
    feed = FindingsFeed(loop, repository.version)

    def alert(row: FindingRow) -> None:  # the monitor's thread
        payload = {"event": "detect.finding", "finding": row.as_json()}
        if syslog is not None:
            syslog.send(payload["finding"])  # type: ignore[arg-type]
        if webhook is not None:
            loop.call_soon_threadsafe(webhook.submit, payload)

    monitor = None
    if config.interface is not None:
        monitor = LiveMonitor(config, own_relays(settings), repository, alert, feed.bump)
        monitor.start()
        if webhook is not None:
            webhook.start()
    status = monitor.status if monitor is not None else (lambda: {"enabled": False})
    allowed = [ipaddress.ip_address(parse_relay(r).ip) for r in own_relays(settings)]
    checker = Detector([parse_network(n) for n in config.internal])
    router = findings_router(repository, status, AuditLog(store), allowed,
                             lambda address: checker.is_internal(address.packed), feed)  # fmt: skip
    return Monitoring(monitor, router, syslog, webhook)


class MonitorCollector:
    """The monitor's counters on `/metrics` (callgate_detect_*), read at scrape time."""

    def __init__(self, monitoring: Monitoring) -> None:
        self._m = monitoring

    def collect(self) -> Iterator[Metric]:
        monitor = self._m.monitor
        if monitor is None:
            return
        status = monitor.status()
        yield GaugeMetricFamily("callgate_detect_running",
                                "1 while the monitor reads its interface", value=int(status["running"]))  # fmt: skip
        yield CounterMetricFamily("callgate_detect_packets", "Packets the monitor read",
                                  value=status["packets"])  # fmt: skip
        yield GaugeMetricFamily("callgate_detect_flows", "Flows in the monitor's table",
                                value=status["flows"])  # fmt: skip
        yield CounterMetricFamily("callgate_detect_flows_evicted",
                                  "Flows evicted at the flow table's cap", value=status["flows_evicted"])  # fmt: skip
        yield CounterMetricFamily("callgate_detect_ring_drops",
                                  "Packets the kernel dropped: the capture ring was full", value=status["ring_drops"])  # fmt: skip
        yield CounterMetricFamily("callgate_detect_early_writes",
                                  "Findings seen for the first time written at once (each a transaction)",
                                  value=status["early_writes"])  # fmt: skip
        yield CounterMetricFamily("callgate_detect_early_deferred",
                                  "New findings left to the interval's batched update by the cap on immediate writes",
                                  value=status["early_deferred"])  # fmt: skip
        delay = status.get("new_finding_delay") or {"buckets": {}, "count": 0, "sum": 0.0}
        yield HistogramMetricFamily(
            "callgate_detect_new_finding_delay_seconds",
            "From a finding's first packet to its row stored, for findings seen for the first time",
            buckets=[*delay["buckets"].items(), ("+Inf", delay["count"])],
            sum_value=delay["sum"],
        )
        yield CounterMetricFamily("callgate_detect_write_errors",
                                  "Updates of the findings that could not be stored", value=monitor.write_errors)  # fmt: skip
        findings = CounterMetricFamily(
            "callgate_detect_findings",
            "Fresh findings stored (new, or back after a silence), by sanctioned",
            labels=["sanctioned"],
        )
        for sanctioned, count in monitor.fresh.items():
            findings.add_metric([str(sanctioned).lower()], count)
        yield findings
        alerts = CounterMetricFamily("callgate_detect_alerts", "Alerts by sink and outcome",
                                     labels=["sink", "outcome"])  # fmt: skip
        if self._m.syslog is not None:
            alerts.add_metric(["syslog", "delivered"], self._m.syslog.delivered)
            alerts.add_metric(["syslog", "failed"], self._m.syslog.failed)
        if self._m.webhook is not None:
            for outcome in ("delivered", "failed", "dropped", "retries"):
                alerts.add_metric(["webhook", outcome], getattr(self._m.webhook, outcome))
        yield alerts
