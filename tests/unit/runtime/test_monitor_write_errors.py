"""The monitor inside `serve` while its database is down: every failed update is counted and
retried, but the log gets one ERROR line a minute, not one a second."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from callgate.config import MonitorSettings
from callgate.runtime import monitoring
from callgate.runtime.monitoring import LiveMonitor


class DownRepository:
    def record(self, interface: str, changes: Any) -> list[Any]:
        raise OperationalError("INSERT", {}, Exception("connection refused"))


def test_a_database_that_stays_down_logs_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(monitoring.time, "monotonic", lambda: clock[0])
    live = LiveMonitor(MonitorSettings(interface="eth9"), [], DownRepository(), print)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger=monitoring.log.name):
        for _ in range(120):  # two minutes of updates, one a second
            assert live.update([]) is False
            clock[0] += 1.0
    assert live.write_errors == 120
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 2 and "connection refused" in lines[0]
    assert "60 failed updates since" in lines[1]
