"""When the capture process of `serve --monitor` may write a finding *at once* instead of at the
end of its batching interval (docs/detection.md, "Inside serve"): pure pacing, no I/O.

A host/application/peer seen for the first time is worth an immediate write, so the console
shows it within a fraction of a second of its first packets; a known finding's growth waits for
the interval's batched update. Two bounds keep a flood (a scan, thousands of new flows a second)
from turning that into unbounded work:

- CPU: looking for new findings recomputes the report over the whole flow table, so checks are
  spaced at least `min_gap` apart and by `1 / share - 1` times the last check's cost: they take
  at most `share` of the capture process's time;
- writes: immediate writes are a token bucket of `writes_per_s` (burst of as many); beyond it,
  new findings wait for the interval's update and are counted once each in `deferred`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

MIN_GAP_S = 0.05  # at least this long between two checks for new findings
SHARE = 0.2  # at most this share of the capture process's time goes to those checks
WRITES_PER_S = 10.0  # immediate writes per second (burst of as many); beyond: the interval's


class EarlyWrites:
    """Pacing of the checks for new findings and of their immediate writes."""

    def __init__(self, min_gap: float = MIN_GAP_S, share: float = SHARE,
                 writes_per_s: float = WRITES_PER_S) -> None:  # fmt: skip
        if not 0 < share <= 1 or min_gap < 0 or writes_per_s <= 0:
            raise ValueError("early writes: share in (0, 1], min_gap >= 0, writes_per_s > 0")
        self.min_gap, self.share, self.rate = min_gap, share, writes_per_s
        self._next_check = float("-inf")
        self._tokens = writes_per_s
        self._filled_at: float | None = None
        self._counted: set[Hashable] = set()
        self.writes = 0  # immediate writes made (each one database transaction)
        self.deferred = 0  # new findings left to the interval's update by the write cap

    def may_check(self, now: float) -> bool:
        return now >= self._next_check

    def checked(self, started: float, ended: float) -> None:
        """A check ran from `started` to `ended` (monotonic seconds)."""
        cost = max(0.0, ended - started)
        self._next_check = ended + max(self.min_gap, cost * (1.0 / self.share - 1.0))

    def may_write(self, now: float, keys: Iterable[Hashable]) -> bool:
        """Take a write token for new findings `keys`; False (each key counted once in
        `deferred`) when the bucket is empty."""
        if self._filled_at is not None:
            self._tokens = min(self.rate, self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.writes += 1
            return True
        fresh = set(keys) - self._counted
        self.deferred += len(fresh)
        self._counted |= fresh
        return False

    def batched(self) -> None:
        """The interval's update was stored: what was deferred is written, count anew."""
        self._counted.clear()


DELAY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds; the console's promise is 2 s


class Delays:
    """First packet → stored, per finding seen for the first time: the histogram behind
    `callgate_detect_new_finding_delay_seconds` (cumulative counts per upper bound, as
    Prometheus histograms are)."""

    def __init__(self) -> None:
        self.counts = [0] * len(DELAY_BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.count += 1
        self.sum += seconds
        for i, bound in enumerate(DELAY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1

    def as_json(self) -> dict[str, object]:
        buckets = {str(bound): n for bound, n in zip(DELAY_BUCKETS, self.counts, strict=True)}
        return {"buckets": buckets, "count": self.count, "sum": round(self.sum, 6)}
