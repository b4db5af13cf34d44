"""The shared allocation ledger of a relay split into worker processes (`callgate turn --workers`).

Each worker owns its allocations (the kernel's SO_REUSEPORT hash sends a client's 5-tuple to one
worker; a relayed address is a socket only its worker holds), but three things are about all of
them together:

- the quotas (RFC 8656 §7.2 step 10): allocations in all and per user, across workers;
- "is this address a relayed transport address of this server?" (a permitted peer whatever its
  range, handlers.py `_peer`), for a relay bound by another worker;
- the counters a metrics scrape reports;
- EVEN-PORT reservations (RFC 8656 §7.2, §14.9): the RESERVATION-TOKEN is usually presented from
  another client port (coturn's uclient: RTP after the probe), so by another worker (relay.py).

They live in one SQLite file in a private directory the parent process creates and removes. A
claim checks and records in one `BEGIN IMMEDIATE` transaction, so two workers cannot both take the
last slot. Only the control path touches it (Allocate, deallocation, CreatePermission toward a
private address, the once-a-second sweep); relayed packets never do.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from callgate.turn.counters import TurnCounters
from callgate.types import Address

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS allocations ("
    " id TEXT PRIMARY KEY, worker INTEGER NOT NULL, user TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS allocations_user ON allocations (user)",
    "CREATE TABLE IF NOT EXISTS relays ("
    " host TEXT NOT NULL, port INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (host, port))",
    "CREATE TABLE IF NOT EXISTS counters (worker INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS reservations ("
    " token BLOB PRIMARY KEY, worker INTEGER NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL,"
    " family INTEGER NOT NULL, expires REAL NOT NULL)",
)
# Workers wait this long for another's claim to commit (each takes well under a millisecond).
_BUSY_TIMEOUT_S = 5.0


def quota_reason(max_total: int, max_user: int, total: int, of_user: int) -> str | None:
    """The 486 reason phrase naming the quota reached, or None while both allow one more
    (RFC 8489 §14.8: a reason phrase under 128 characters)."""
    if max_total and total >= max_total:
        return f"Allocation Quota Reached: server full (max_allocations {max_total})"
    if max_user and of_user >= max_user:
        return f"Allocation Quota Reached: {max_user} per user (max_allocations_per_user)"
    return None


class SharedLedger:
    """One worker's handle on the ledger file (`create` makes the file, in the parent)."""

    def __init__(self, path: Path, worker: int) -> None:
        self.worker = worker
        self._db = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # a scratch file: it dies with the relay

    @classmethod
    def create(cls, path: Path) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                db.execute(statement)
        finally:
            db.close()

    def counts(self, user: str) -> tuple[int, int]:
        """Live allocations on all workers: in all, and of `user`."""
        total = self._db.execute("SELECT COUNT(*) FROM allocations").fetchone()[0]
        of_user = self._db.execute(
            "SELECT COUNT(*) FROM allocations WHERE user = ?", (user,)
        ).fetchone()[0]
        return int(total), int(of_user)

    def claim(
        self,
        allocation_id: str,
        user: str,
        relays: list[Address],
        *,
        max_total: int,
        max_user: int,
    ) -> str | None:
        """Record the allocation if the quotas allow it; else the 486 reason (nothing recorded)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            total, of_user = self.counts(user)
            refusal = quota_reason(max_total, max_user, total, of_user)
            if refusal is None:
                db.execute(
                    "INSERT INTO allocations (id, worker, user) VALUES (?, ?, ?)",
                    (allocation_id, self.worker, user),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO relays (host, port, id) VALUES (?, ?, ?)",
                    [(host, port, allocation_id) for host, port in relays],
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return refusal

    def release(self, allocation_id: str) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM allocations WHERE id = ?", (allocation_id,))
            db.execute("DELETE FROM relays WHERE id = ?", (allocation_id,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def holds_relay(self, address: Address) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM relays WHERE host = ? AND port = ?", (address[0], address[1])
        ).fetchone()
        return row is not None

    def reserve(self, token: bytes, address: Address, family: int, expires: float) -> None:
        """Record a reservation this worker holds the socket of (`expires`: CLOCK_MONOTONIC,
        one clock for every process on the machine)."""
        self._db.execute(
            "INSERT OR REPLACE INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
            (token, self.worker, address[0], address[1], family, expires),
        )

    def take_reservation(self, token: bytes, now: float) -> tuple[int, Address, int] | None:
        """Remove an unexpired reservation and say who held it: (worker, address, family)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "DELETE FROM reservations WHERE token = ? RETURNING worker, host, port, family, "
                "expires",
                (token,),
            ).fetchone()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if row is None or row[4] <= now:
            return None
        return int(row[0]), (str(row[1]), int(row[2])), int(row[3])

    def drop_reservation(self, token: bytes) -> None:
        self._db.execute("DELETE FROM reservations WHERE token = ?", (token,))

    def reservations_held(self) -> set[bytes]:
        """Tokens of this worker's reservations still recorded (not taken by another worker)."""
        rows = self._db.execute("SELECT token FROM reservations WHERE worker = ?", (self.worker,))
        return {bytes(token) for (token,) in rows}

    def publish(self, counters: TurnCounters) -> None:
        """This worker's counters, for the parent's metrics endpoint."""
        body = json.dumps(dataclasses.asdict(counters))
        self._db.execute(
            "INSERT OR REPLACE INTO counters (worker, body) VALUES (?, ?)", (self.worker, body)
        )

    def close(self) -> None:
        self._db.close()


def summed_counters(path: Path) -> TurnCounters:
    """Every worker's last published counters added up (what `/metrics` shows in worker mode)."""
    db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S)
    try:
        rows = [json.loads(body) for (body,) in db.execute("SELECT body FROM counters")]
    finally:
        db.close()
    total = TurnCounters()
    for row in rows:
        for field in dataclasses.fields(TurnCounters):
            value = row.get(field.name)
            if isinstance(value, int):
                setattr(total, field.name, getattr(total, field.name) + value)
            elif isinstance(value, dict):
                merged: dict[object, int] = getattr(total, field.name)
                for key, count in value.items():
                    # JSON made the errors dict's int codes strings; give them back
                    typed = int(key) if field.name == "errors" else key
                    merged[typed] = merged.get(typed, 0) + int(count)
    return total
