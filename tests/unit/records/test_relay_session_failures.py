"""A relay-session write that fails is told to `on_failure` (serve then refuses allocations):
a failed PROGRESS write, one statement for all the allocations it updates, is told once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from callgate.records.relay_sessions import DbEventSink
from callgate.storage.db import Store
from callgate.types.events import AllocationEvent, EventKind
from tests.conftest import allocation_event

T0 = 1_700_000_000.0


def test_a_failed_progress_write_is_told_once_and_counted(store: Store) -> None:
    told: list[tuple[AllocationEvent, SQLAlchemyError]] = []
    sink = DbEventSink(
        store.sessions, progress_every=3600.0, on_failure=lambda e, x: told.append((e, x))
    )
    ids = [c * 32 for c in "abc"]
    try:
        for allocation_id in ids:
            sink.emit(allocation_event(EventKind.CREATED, T0, allocation_id=allocation_id))
        assert sink.flush() and not told
        with store.engine.begin() as conn:  # the table is gone: every later write fails
            conn.execute(text("DROP TABLE relay_sessions"))
        for allocation_id in ids:
            changes: dict[str, Any] = {"allocation_id": allocation_id, "packets_to_peer": 5}
            sink.emit(allocation_event(EventKind.PROGRESS, T0 + 5, **changes))
        assert sink.flush()
        assert len(told) == 1 and sink.write_errors == 1
        event, error = told[0]
        assert event.kind is EventKind.PROGRESS and event.allocation_id in ids
        assert isinstance(error, SQLAlchemyError)
    finally:
        sink.close()
