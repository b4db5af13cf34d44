"""The capture process of `serve --monitor` (runtime/monitoring.py starts it with the "spawn"
method): the ring and the detector run in a process of their own, so inspecting packets never
holds the server's interpreter lock and a flood costs the relay and the API nothing but a core.

Protocol over one duplex `multiprocessing` connection, child → parent:

- first `("ready", None)` once the ring is bound, or `("error", message)` and exit;
- every `interval` seconds `("update", changes, status)`: the `Change`s since the last stored
  update (detect/live/monitor.py `Watch`) and the counters; when `changes` is not empty the parent
  answers `True` (stored: the next update counts from here) or `False` (not stored: the same
  gains are offered again next time);
- between them, as soon as packets were inspected, the same message with only the findings seen
  for the first time (`Watch.new`), answered the same way: a new host/application/peer reaches
  the database (and the console) at once, not at the end of the interval. Those checks and writes
  are paced by `EarlyWrites` (early.py: a share of the CPU, a cap on writes per second, what the
  cap defers counted); growth of known findings stays batched;
- after a stored update that had new findings, `("update", [], status)` with the counters at once
  (first packet → stored delays);
- `("error", message)` if the loop fails.

The parent sets `stop` (a multiprocessing Event): the child sends a last update and exits.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.live.early import Delays, EarlyWrites
from callgate.detect.live.monitor import Change, Watch
from callgate.detect.live.ring import Ring, RingError

STOP_GRACE = 10.0  # once stopping, seconds to wait for the parent to store the last update


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    interface: str
    internal: tuple[str, ...]
    relays: tuple[str, ...]
    interval: float
    max_flows: int
    idle_timeout: float


def status(detector: Detector, ring: Ring, early: EarlyWrites, delays: Delays) -> dict[str, Any]:
    table = detector.flows
    return {
        "packets": table.packets, "flows": len(table.flows), "flows_evicted": table.evicted,
        "flows_closed_idle": table.closed, "ring_drops": ring.count_drops(),
        "early_writes": early.writes, "early_deferred": early.deferred,
        "new_finding_delay": delays.as_json(),
    }  # fmt: skip


def run(config: WorkerConfig, conn: Connection, stop: Event) -> None:
    """The child's main function."""
    # Ctrl-C on a terminal reaches the whole process group: the server decides when we stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ring = Ring(config.interface)
    except RingError as exc:
        conn.send(("error", str(exc).split(": ", 1)[-1]))
        return
    try:
        detector = Detector([parse_network(n) for n in config.internal],
                            [parse_relay(r) for r in config.relays])  # fmt: skip
        detector.flows.max_flows = config.max_flows
        detector.flows.idle = config.idle_timeout
        watch = Watch(detector)
        conn.send(("ready", None))
        _loop(config, conn, stop, ring, detector, watch)
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone
    except Exception as exc:  # reported to the parent, which shows it in /api/findings
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        ring.close()


def _loop(config: WorkerConfig, conn: Connection, stop: Event, ring: Ring, detector: Detector,
          watch: Watch) -> None:  # fmt: skip
    pace = Pace(EarlyWrites(), Delays())
    table = detector.flows
    inspected = table.inspections
    due = time.monotonic() + config.interval
    while not stop.is_set():
        for packets in ring.blocks(timeout=min(config.interval, 0.2)):
            for ts, linktype, frame in packets:
                detector.packet(ts, linktype, frame)
        now = time.monotonic()
        if now >= due:
            if _update(conn, detector, ring, watch, stop, pace, watch.changes()):
                pace.early.batched()
            due = time.monotonic() + config.interval
        elif table.inspections != inspected and pace.early.may_check(now):
            inspected = table.inspections
            _early(conn, detector, ring, watch, stop, pace, now)
    _update(conn, detector, ring, watch, stop, pace, watch.changes())


@dataclass(frozen=True, slots=True)
class Pace:
    early: EarlyWrites
    delays: Delays


def _early(conn: Connection, detector: Detector, ring: Ring, watch: Watch, stop: Event,
           pace: Pace, started: float) -> None:  # fmt: skip
    """Write the findings seen for the first time now, if the write cap allows."""
    changes = watch.changes()
    new = watch.new(changes)
    pace.early.checked(started, time.monotonic())
    if not new:
        return
    keys = [(c.session.host, c.session.app, c.session.peer, c.session.sanctioned) for c in new]
    if pace.early.may_write(time.monotonic(), keys):
        _update(conn, detector, ring, watch, stop, pace, new)


def _update(conn: Connection, detector: Detector, ring: Ring, watch: Watch, stop: Event,
            pace: Pace, changes: list[Change]) -> bool:  # fmt: skip
    """Send `changes`; when there are some, wait for the parent's answer (meanwhile the kernel
    keeps filling the ring, and counts what does not fit). True when they were stored; then
    each finding seen for the first time adds its first packet → stored delay to `delays`."""
    new = watch.new(changes)
    conn.send(("update", changes, status(detector, ring, pace.early, pace.delays)))
    if not changes:
        return True
    waited = 0.0
    while not conn.poll(1.0):
        waited = waited + 1.0 if stop.is_set() else 0.0
        if waited >= STOP_GRACE:
            return False
    if conn.recv() is not True:
        return False
    stored = time.time()  # the packets' timestamps are the kernel's wall clock
    for change in new:
        pace.delays.observe(stored - change.session.first_seen)
    watch.commit(changes)
    if new:  # the counters now, without waiting for the next update
        conn.send(("update", [], status(detector, ring, pace.early, pace.delays)))
    return True
