"""The heartbeat of live calls: every few seconds one batched UPDATE stamps `calls.last_alive_at`
on the records of the calls in progress, so that after a crash (`kill -9`, power loss) the next
start ends each open record within one interval of the truth (`CdrRepository.close_stale`).

Cheap by design: one statement per interval for all live calls (in chunks of 500 ids), off the
event loop; nothing at all while no call is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Engine, Table, bindparam, update
from sqlalchemy.exc import SQLAlchemyError

from callgate.storage.models import Call

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 2.0  # seconds; a crashed call's record ends at most this early
_CHUNK = 500
_calls = cast(Table, Call.__table__)
_BEAT = (
    update(_calls)
    .where(_calls.c.call_id.in_(bindparam("ids", expanding=True)), _calls.c.end_at.is_(None))
    .values(last_alive_at=bindparam("now"))
)
# Several nodes (docs/scaling.md): a node beats only for the calls it still owns, so a call
# another node took over is never kept alive by the node that lost it.
_BEAT_OWNED = _BEAT.where(_calls.c.node_id == bindparam("node"))


def beat(
    engine: Engine,
    call_ids: Sequence[str],
    now: datetime | None = None,
    *,
    node_id: str | None = None,
) -> int:
    """Stamp `now` on the open records of `call_ids` (with `node_id`: those it owns); how many
    rows were stamped."""
    now = now or datetime.now(UTC)
    statement = _BEAT if node_id is None else _BEAT_OWNED
    stamped = 0
    with engine.begin() as conn:
        for start in range(0, len(call_ids), _CHUNK):
            chunk = list(call_ids[start : start + _CHUNK])
            stamped += conn.execute(statement, {"ids": chunk, "now": now, "node": node_id}).rowcount
    return stamped


class CallHeartbeat:
    """Calls `beat` every `interval` seconds with the ids `live_ids()` gives."""

    def __init__(
        self,
        engine: Engine,
        live_ids: Callable[[], Iterable[str]],
        interval: float = HEARTBEAT_INTERVAL,
        *,
        node_id: str | None = None,
    ) -> None:
        self._engine = engine
        self._node_id = node_id
        self._live_ids = live_ids
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.beats = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            ids = list(self._live_ids())
            if not ids:
                continue
            try:
                await asyncio.to_thread(beat, self._engine, ids, node_id=self._node_id)
                self.beats += 1
            except SQLAlchemyError as exc:  # a busy or full disk must not stop the calls
                log.warning("call heartbeat failed: %s", exc)
