"""Recorder health on `/metrics`: whether calls can be recorded now, how many are being recorded,
and how many recordings failed since start."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from callgate.recording.service import RecordingService


class RecordingCollector:
    def __init__(self, service: RecordingService) -> None:
        self._service = service

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
