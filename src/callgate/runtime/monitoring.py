"""Unmanaged-calling detection inside `callgate serve` (`[monitor]`, `--monitor IFACE`;
docs/detection.md, "Inside serve").

One thread reads the interface's TPACKET_V3 ring into the detector of `callgate detect`; every
`interval_s` it takes the sessions that are new or grew (detect/live/monitor.py `Watch`), adds
them to `detect_findings` (records/findings.py, which audits fresh unsanctioned findings in the
same transaction) and alerts: syslog from the thread, the webhook through the event loop. A
write that fails is retried at the next interval (the changes are kept). `Monitoring` bundles it
with the API router, the Prometheus collector and the alert senders.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.exc import SQLAlchemyError

from callgate.api.routes.findings import findings_router
from callgate.config import MonitorSettings, Settings
from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.live.monitor import Watch
from callgate.detect.live.ring import Ring, RingError
from callgate.errors import ConfigError
from callgate.records.audit import AuditLog
from callgate.records.findings import FindingRepository, FindingRow
from callgate.runtime.alerts import SyslogSender, WebhookSender
from callgate.storage.db import Store

log = logging.getLogger(__name__)
WILDCARDS = ("0.0.0.0", "::")


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
    """The capture thread and its detector."""

    def __init__(
        self, settings: MonitorSettings, relays: list[str], repository: FindingRepository,
        alert: Callable[[FindingRow], None],
    ) -> None:  # fmt: skip
        assert settings.interface is not None
        self.interface = settings.interface
        self.interval = settings.interval_s
        self.repository, self.alert = repository, alert
        self.detector = Detector([parse_network(n) for n in settings.internal],
                                 [parse_relay(r) for r in relays])  # fmt: skip
        self.detector.flows.max_flows = settings.max_flows
        self.detector.flows.idle = settings.idle_timeout_s
        self.watch = Watch(self.detector)
        self.fresh = {True: 0, False: 0}  # fresh findings stored, by sanctioned
        self.write_errors = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring: Ring | None = None

    def start(self) -> None:
        try:
            self._ring = Ring(self.interface)
        except RingError as exc:
            raise ConfigError(
                f"monitor.interface (--monitor): {str(exc).split(': ', 1)[-1]}"
            ) from None
        self._thread = threading.Thread(target=self._run, name="detect-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        assert self._ring is not None
        ring, detector = self._ring, self.detector
        try:
            due = time.monotonic() + self.interval
            while not self._stop.is_set():
                for packets in ring.blocks(timeout=min(self.interval, 0.2)):
                    for ts, linktype, frame in packets:
                        detector.packet(ts, linktype, frame)
                if time.monotonic() >= due:
                    self.update()
                    due = time.monotonic() + self.interval
            self.update()
        except Exception as exc:  # the server keeps running; /api/findings shows the error
            log.exception("the monitor on %s stopped", self.interface)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            ring.close()

    def update(self) -> None:
        """Store what changed since the last update, and alert on fresh findings."""
        changes = self.watch.changes()
        if not changes:
            return
        try:
            rows = self.repository.record(self.interface, changes)
        except SQLAlchemyError as exc:
            self.write_errors += 1
            log.error("monitor findings not stored (retried next interval): %s", exc)
            return
        self.watch.commit(changes)
        for row in rows:
            self.fresh[row.sanctioned] += 1
            if not row.sanctioned:
                self.alert(row)

    def status(self) -> dict[str, Any]:
        table = self.detector.flows
        return {
            "enabled": True, "interface": self.interface, "running": self.error is None,
            "error": self.error, "packets": table.packets, "flows": len(table.flows),
            "flows_evicted": table.evicted, "flows_closed_idle": table.closed,
            "write_errors": self.write_errors,
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

    def alert(row: FindingRow) -> None:  # the monitor's thread
        payload = {"event": "detect.finding", "finding": row.as_json()}
        if syslog is not None:
            syslog.send(payload["finding"])  # type: ignore[arg-type]
        if webhook is not None:
            loop.call_soon_threadsafe(webhook.submit, payload)

    monitor = None
    if config.interface is not None:
        monitor = LiveMonitor(config, own_relays(settings), repository, alert)
        monitor.start()
        if webhook is not None:
            webhook.start()
    status = monitor.status if monitor is not None else (lambda: {"enabled": False})
    allowed = [ipaddress.ip_address(parse_relay(r).ip) for r in own_relays(settings)]
    checker = Detector([parse_network(n) for n in config.internal])
    router = findings_router(repository, status, AuditLog(store), allowed,
                             lambda address: checker.is_internal(address.packed))  # fmt: skip
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
