"""Appenders racing: a sign-in and a call invite append audit entries at the same moment from
different connections. Each must get its own seq and the chain must stay intact."""

from __future__ import annotations

import threading

from sqlalchemy import select, text

from callgate.records.audit import AuditLog
from callgate.storage.db import Store
from callgate.storage.models import User

WRITERS = 6
EACH = 150


def test_concurrent_appenders_never_collide(store: Store) -> None:
    log = AuditLog(store)
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        start.wait()
        try:
            for i in range(EACH):
                with store.engine.begin() as conn:
                    # Like a sign-in: read something first, then append in the same transaction.
                    conn.execute(select(User.id).limit(1)).first()
                    conn.execute(text("SELECT 1"))
                    AuditLog.append_in(conn, f"w{n}", "auth.login", f"user:w{n}", {"i": i})
        except BaseException as exc:  # reported below with the test's failure
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors[0]
    assert log.size() == WRITERS * EACH
    result = log.verify(None)
    assert result.ok, result.problem
