"""The capture process of `serve --monitor` (runtime/monitoring.py starts it with the "spawn"
method): the ring and the detector run in a process of their own, so inspecting packets never
holds the server's interpreter lock and a flood costs the relay and the API nothing but a core.

Protocol over one duplex `multiprocessing` connection, child → parent:

- first `("ready", None)` once the ring is bound, or `("error", message)` and exit;
- every `interval` seconds `("update", changes, status)`: the `Change`s since the last stored
  update (detect/live/monitor.py `Watch`) and the counters; when `changes` is not empty the parent
  answers `True` (stored: the next update counts from here) or `False` (not stored: the same
  gains are offered again next time);
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
from callgate.detect.live.monitor import Watch
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


def status(detector: Detector, ring: Ring) -> dict[str, Any]:
    table = detector.flows
    return {
        "packets": table.packets, "flows": len(table.flows), "flows_evicted": table.evicted,
        "flows_closed_idle": table.closed, "ring_drops": ring.count_drops(),
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
    due = time.monotonic() + config.interval
    while not stop.is_set():
        for packets in ring.blocks(timeout=min(config.interval, 0.2)):
            for ts, linktype, frame in packets:
                detector.packet(ts, linktype, frame)
        if time.monotonic() >= due:
            _update(conn, detector, ring, watch, stop)
            due = time.monotonic() + config.interval
    _update(conn, detector, ring, watch, stop)


def _update(conn: Connection, detector: Detector, ring: Ring, watch: Watch, stop: Event) -> None:
    """Send what changed; when something did, wait for the parent's answer (meanwhile the kernel
    keeps filling the ring, and counts what does not fit)."""
    changes = watch.changes()
    conn.send(("update", changes, status(detector, ring)))
    if not changes:
        return
    waited = 0.0
    while not conn.poll(1.0):
        waited = waited + 1.0 if stop.is_set() else 0.0
        if waited >= STOP_GRACE:
            return
    if conn.recv() is True:
        watch.commit(changes)
