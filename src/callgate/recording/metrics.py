"""Recorder health on `/metrics`: whether calls can be recorded now, how many are being recorded,
and how many recordings failed since start; with a WORM archive, whether its last run archived
everything it should have, how many recordings it archived since start, and how long the oldest
closed recording still to archive has waited."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from callgate.recording.service import RecordingService


class ArchiveStatus(Protocol):
    archived_total: int
    ok: bool

    def lag_seconds(self) -> float: ...


class RecordingCollector:
    def __init__(self, service: RecordingService, archive: ArchiveStatus | None = None) -> None:
        self._service = service
        self._archive = archive

    def collect(self) -> Iterator[Metric]:
        service = self._service
        yield GaugeMetricFamily(
            "callgate_recording_available",
            "1 when calls that must be recorded can be (master key loaded), else 0",
            value=1 if service.available else 0,
        )
        yield GaugeMetricFamily(
            "callgate_recordings_active", "Calls being recorded now", value=len(service.active)
        )
        yield CounterMetricFamily(
            "callgate_recordings_failed",
            "Recordings that stopped being written mid-call (the call ended recording-failed)",
            value=service.failed_total,
        )
        archive = self._archive
        if archive is not None:
            yield GaugeMetricFamily(
                "callgate_recording_archive_ok",
                "1 when the last archive run copied every closed recording, else 0 (see the log)",
                value=1 if archive.ok else 0,
            )
            yield CounterMetricFamily(
                "callgate_recordings_archived",
                "Recordings copied to the WORM archive by this process",
                value=archive.archived_total,
            )
            yield GaugeMetricFamily(
                "callgate_recording_archive_lag_seconds",
                "How long the oldest closed recording not archived yet has waited (0: none)",
                value=archive.lag_seconds(),
            )
