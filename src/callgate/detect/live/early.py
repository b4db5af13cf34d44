"""When the capture process of `serve --monitor` may write a finding *at once* instead of at the
end of its batching interval (docs/detection.md, "Inside serve"): pure pacing, no I/O.

A host/application/peer seen for the first time is worth an immediate write, so the console
shows it within a fraction of a second of its first packets; a known finding's growth waits for
the interval's batched update. Two bounds keep a flood (a scan, thousands of new flows a second)
from turning that into unbounded work:

- CPU: looking for new findings recomputes the report over the whole flow table, so checks are
  spaced at least `min_gap` apart and by `1 / share - 1` times the last check's cost: they take
  at most `share` of the capture process's time;
- writes: immediate writes are a token bucket of `writes_per_s` (burst of as many), each of at
  most `per_write` findings (the capture waits for the transaction: 500 findings in one write
  held it ≈ 0.5 s); beyond, new findings wait for a later write or the interval's update. Those
  the interval's update then writes are counted once each in `deferred` (a finding a later
  immediate write took is not), and at most `max_keys` waiting findings are remembered (the flow
  table's cap: a database that stays down must not grow it without bound).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

MIN_GAP_S = 0.05  # at least this long between two checks for new findings
SHARE = 0.2  # at most this share of the capture process's time goes to those checks
WRITES_PER_S = 10.0  # immediate writes per second (burst of as many); beyond: the interval's
PER_WRITE = 20  # findings one immediate write takes at most; the rest: a later write
MAX_KEYS = 100_000  # waiting findings remembered for `deferred` (serve sets the flow table's cap)


class EarlyWrites:
    """Pacing of the checks for new findings and of their immediate writes."""

    def __init__(self, min_gap: float = MIN_GAP_S, share: float = SHARE,
                 writes_per_s: float = WRITES_PER_S, per_write: int = PER_WRITE,
                 max_keys: int = MAX_KEYS) -> None:  # fmt: skip
        if not 0 < share <= 1 or min_gap < 0 or writes_per_s <= 0 or per_write < 1:
            raise ValueError(
                "early writes: share in (0, 1], min_gap >= 0, writes_per_s > 0, per_write >= 1"
            )
        self.min_gap, self.share, self.rate = min_gap, share, writes_per_s
        self.per_write, self.max_keys = per_write, max_keys
        self._next_check = float("-inf")
        self._tokens = writes_per_s
        self._filled_at: float | None = None
        self._waiting: set[Hashable] = set()  # new findings the cap left, not written since
        self.writes = 0  # immediate writes made (each one database transaction)
        self.deferred = 0  # new findings the interval's update wrote because of the cap

    def may_check(self, now: float) -> bool:
        return now >= self._next_check

    def checked(self, started: float, ended: float) -> None:
        """A check ran from `started` to `ended` (monotonic seconds)."""
        cost = max(0.0, ended - started)
        self._next_check = ended + max(self.min_gap, cost * (1.0 / self.share - 1.0))

    def may_write(self, now: float, keys: Sequence[Hashable]) -> int:
        """How many of the new findings `keys` (the first ones) to write at once: up to
        `per_write` when a write token is left, else none. The others wait."""
        if self._filled_at is not None:
            self._tokens = min(self.rate, self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now
        taken = 0
        if self._tokens >= 1.0 and keys:
            self._tokens -= 1.0
            self.writes += 1
            taken = min(len(keys), self.per_write)
        self._waiting.difference_update(keys[:taken])
        for key in keys[taken:]:
            if len(self._waiting) >= self.max_keys:
                break
            self._waiting.add(key)
        return taken

    def batched(self, stored: bool) -> None:
        """The interval's update ran: when `stored`, what was waiting is written (counted in
        `deferred`); else it waits on, remembered up to `max_keys`."""
        if stored:
            self.deferred += len(self._waiting)
            self._waiting.clear()


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
