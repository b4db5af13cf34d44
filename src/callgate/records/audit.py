"""The audit log in the store: appending entries (inside the caller's transaction), streaming
them for verification, and signed checkpoints. The format is described in audit_chain.py.

Concurrency: `append_in` reads the head (highest seq) and inserts head + 1 in the caller's
transaction. `seq` is the primary key, so two writers racing for the same seq can never fork the
chain: one of them fails with an IntegrityError and its transaction rolls back. SQLite serializes
writers anyway; on PostgreSQL `append_in` first takes `LOCK TABLE audit_entries IN SHARE ROW
EXCLUSIVE MODE` (it conflicts with itself, not with readers) so that concurrent appenders queue
instead of failing — `SELECT … FOR UPDATE` on the head row would not cover an empty table.
Later appends in the same transaction reuse the head the first one wrote (`_locked_head`).
The lock is held until the transaction ends, so a writer appends as late in its transaction as
it can: the records writer holds its batch's entries back and appends them after its CDR writes
(records/record_batch.py, `hold_appends`), so the nodes' batches queue only for that append.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from sqlalchemy import Connection, func, insert, select, text

from callgate.keys import write_private_file
from callgate.records.audit_chain import (
    GENESIS,
    Entry,
    VerifyResult,
    body_json,
    canonical_json,
    format_time,
    key_id,
    sign_checkpoint,
    verify,
)
from callgate.records.audit_verify import supported, verify_stored
from callgate.records.driver_sql import executemany
from callgate.storage.db import Store
from callgate.storage.models import AuditCheckpoint, AuditEntry, utcnow
from callgate.storage.text import storable

KEY_FILENAME = "audit-ed25519.pem"
CHUNK = 5000
# (actor, action, object, details) of one entry to append; details None = {}.
NewEntry = tuple[str, str, str, Mapping[str, Any] | None]


def default_key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / KEY_FILENAME


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in `path` (PKCS#8 PEM), created with mode 0600 when missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        write_private_file(path, pem)
        return key
    key_obj = load_pem_private_key(data, password=None)
    if not isinstance(key_obj, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key_obj


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key of a PEM file holding either the private or only the public key."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return private.public_key()
    public = load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return public


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    id: int
    size: int
    head_hash: str
    key_id: str
    created_at: datetime
    note: str


def _entry(row: Any) -> Entry:
    return Entry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        object=row.object,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


_ENTRY_COLUMNS = (
    AuditEntry.seq,
    AuditEntry.at,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.object,
    AuditEntry.details,
    AuditEntry.prev_hash,
    AuditEntry.hash,
)


# Built once (SQLAlchemy reuses their compiled form): the call path appends three entries per
# call attempt.
_HEAD = select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
_INSERT = insert(AuditEntry)
_PG_LOCK = text("LOCK TABLE audit_entries IN SHARE ROW EXCLUSIVE MODE")
_HEAD_SQL = "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1"  # DB-API, as _HEAD
# pysqlite opens a transaction only at the first write, so the head read could run outside it
# and race another appender to the same seq. A write that changes nothing takes SQLite's write
# lock first (waiting up to busy_timeout for it) and holds it until the transaction ends.
_SQLITE_LOCK = text("UPDATE audit_entries SET seq = seq WHERE 0")
_HEAD_KEY = "callgate.audit_head"
_HELD_KEY = "callgate.audit_held"


def _transaction(conn: Connection) -> tuple[object, object] | None:
    """What identifies the transaction (and savepoint) `conn` is in now; None outside one."""
    root = conn.get_transaction()
    if root is None or not root.is_active:
        return None
    return root, conn.get_nested_transaction()


def _locked_head(conn: Connection) -> tuple[int, str]:
    """(seq, hash) of the last entry, with the appenders' lock held until the transaction ends.

    The first append of a transaction takes the lock and reads the head; later appends in the
    same transaction (and savepoint) take the head this module remembered on the connection when
    it last appended: nobody else can have appended since, the lock is still ours. A savepoint
    rolled back, a new transaction or another savepoint never match the remembered one, so they
    read again. Entries held back on the connection (`hold_appends`) are appended first.
    """
    held = conn.info.pop(_HELD_KEY, None)
    if held is not None:
        held()  # appends (and comes back here) before this append reads the head
    current = _transaction(conn)
    remembered = conn.info.get(_HEAD_KEY)
    if current is not None and remembered is not None and remembered[0] == current:
        return remembered[1], remembered[2]
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_LOCK)
    elif conn.dialect.name == "sqlite":
        conn.execute(_SQLITE_LOCK)
    head = conn.execute(_HEAD).first()
    return (int(head.seq), str(head.hash)) if head is not None else (0, GENESIS)


def queue_head(conn: Connection) -> Callable[[], None]:
    """PostgreSQL in pipeline mode (records/record_batch.py): queue the appenders' lock and the
    head read; the function returned, called once the pipeline is synced, remembers the head,
    so the transaction's appends start from it without a round trip of their own."""
    conn.execute(_PG_LOCK)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(_HEAD_SQL)

    def read() -> None:
        row = cursor.fetchone()
        seq, hash = (int(row[0]), str(row[1])) if row is not None else (0, GENESIS)
        _remember_head(conn, seq, hash)

    return read


def hold_appends(conn: Connection, append_held: Callable[[], None]) -> None:
    """Someone holds entries back on `conn` to append them later in its transaction: any other
    append on `conn` first calls `append_held()` (once), so the chain keeps their order."""
    conn.info[_HELD_KEY] = append_held


def release_appends(conn: Connection) -> None:
    """Undo `hold_appends` (the holder appended its entries, or gave up)."""
    conn.info.pop(_HELD_KEY, None)


def _remember_head(conn: Connection, seq: int, hash: str) -> None:
    current = _transaction(conn)
    if current is None:
        conn.info.pop(_HEAD_KEY, None)
    else:
        conn.info[_HEAD_KEY] = (current, seq, hash)


class AuditLog:
    """Append, read, verify and checkpoint the audit log of `store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def append(
        self,
        actor: str,
        action: str,
        object: str,
        details: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> Entry:
        """Append one entry in its own transaction."""
        with self._store.engine.begin() as conn:
            return self.append_in(conn, actor, action, object, details, at)

    @staticmethod
    def append_in(
        conn: Connection,
        actor: str,
        action: str,
        object: str,
        details: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> Entry:
        """Append one entry inside the caller's transaction (it commits or rolls back with it)."""
        return AuditLog.append_many_in(conn, [(actor, action, object, details)], at)[0]

    @staticmethod
    def append_many_in(
        conn: Connection, new: Sequence[NewEntry], at: datetime | None = None
    ) -> list[Entry]:
        """Append several entries, in order, inside the caller's transaction: one head read and
        one multi-row insert for the lot (the fast way to write a batch)."""
        when = at if at is not None else utcnow()
        return AuditLog.append_timed_in(conn, [(entry, when) for entry in new])

    @staticmethod
    def append_timed_in(conn: Connection, new: Sequence[tuple[NewEntry, datetime]]) -> list[Entry]:
        """`append_many_in` with each entry's own time (a records batch's entries)."""
        if not new:
            return []
        # refuses naive datetimes before anything is written
        times = [(when, format_time(when)) for _, when in new]
        texts = [canonical_json(dict(entry[3] or {})).decode("utf-8") for entry, _ in new]
        seq, prev = _locked_head(conn)
        written: list[Entry] = []
        prev_raw = bytes.fromhex(prev)
        for ((raw_actor, raw_action, raw_object, _), _), (when, at_text), details_text in zip(
            new, times, texts, strict=True
        ):
            # Hashed as stored: a NUL (a handle tried at sign-in) cannot be kept by PostgreSQL.
            actor, action, object = storable(raw_actor), storable(raw_action), storable(raw_object)
            seq += 1
            prev_raw = hashlib.sha256(
                prev_raw + body_json(seq, at_text, actor, action, object, details_text)
            ).digest()
            digest = prev_raw.hex()
            written.append(Entry(seq, when, actor, action, object, details_text, prev, digest))
            prev = digest
        rows = [
            {
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "object": e.object,
                "details": e.details,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in written
        ]
        executemany(conn, _INSERT, rows)
        _remember_head(conn, seq, prev)
        return written

    def append_many(self, new: Sequence[NewEntry], at: datetime | None = None) -> list[Entry]:
        """Append several entries in one transaction of their own."""
        with self._store.engine.begin() as conn:
            return self.append_many_in(conn, new, at)

    def size(self) -> int:
        with self._store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one())

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry, (0, GENESIS) when the log is empty."""
        with self._store.engine.connect() as conn:
            row = conn.execute(_HEAD).first()
        return (int(row.seq), str(row.hash)) if row is not None else (0, GENESIS)

    def watch(self, action: str, after: int) -> tuple[int, bool]:
        """(the head's seq, whether an `action` entry lies in (`after`, head]): ask again with
        the head as `after`, so each poll reads only what was written since the last one (the
        primary key's end, and a short range of the (action, seq) index)."""
        with self._store.engine.connect() as conn:
            head = conn.execute(select(func.max(AuditEntry.seq))).scalar_one()
            if head is None or head <= after:
                return max(after, int(head or 0)), False
            found = conn.execute(
                select(AuditEntry.seq)
                .where(AuditEntry.action == action, AuditEntry.seq > after, AuditEntry.seq <= head)
                .limit(1)
            ).first()
        return int(head), found is not None

    def iter_entries(self, chunk: int = CHUNK) -> Iterator[Entry]:
        """All entries in seq order, read `chunk` rows at a time (keyset pagination)."""
        last = None
        while True:
            query = select(*_ENTRY_COLUMNS).order_by(AuditEntry.seq).limit(chunk)
            if last is not None:
                query = query.where(AuditEntry.seq > last)
            with self._store.engine.connect() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield _entry(row)
            if len(rows) < chunk:
                return
            last = rows[-1].seq

    def recent(self, limit: int = 100) -> list[Entry]:
        """The last `limit` entries, newest first."""
        with self._store.engine.connect() as conn:
            rows = conn.execute(
                select(*_ENTRY_COLUMNS).order_by(AuditEntry.seq.desc()).limit(limit)
            ).all()
        return [_entry(row) for row in rows]

    # ---- checkpoints ----

    def checkpoint(self, key: Ed25519PrivateKey) -> StoredCheckpoint:
        """Sign (size, head hash) of the log as it is now and keep the signed note."""
        with self._store.engine.begin() as conn:
            row = conn.execute(_HEAD).first()
            size, head = (int(row.seq), str(row.hash)) if row is not None else (0, GENESIS)
            note = sign_checkpoint(key, size, head)
            kid = key_id(key.public_key()).hex()
            created = utcnow()
            new_id = conn.execute(
                insert(AuditCheckpoint)
                .values(size=size, head_hash=head, signed_note=note, key_id=kid, created_at=created)
                .returning(AuditCheckpoint.id)
            ).scalar_one()
        return StoredCheckpoint(int(new_id), size, head, kid, created, note)

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._store.engine.connect() as conn:
            rows = conn.execute(
                select(
                    AuditCheckpoint.id,
                    AuditCheckpoint.size,
                    AuditCheckpoint.head_hash,
                    AuditCheckpoint.key_id,
                    AuditCheckpoint.created_at,
                    AuditCheckpoint.signed_note,
                ).order_by(AuditCheckpoint.id)
            ).all()
            return [
                StoredCheckpoint(r.id, r.size, r.head_hash, r.key_id, r.created_at, r.signed_note)
                for r in rows
            ]

    def verify(
        self,
        public_key: Ed25519PublicKey | None,
        extra_checkpoints: list[str] | None = None,
        entries: Iterator[Entry] | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int | None = None,
    ) -> VerifyResult:
        """Verify the stored chain against the stored checkpoints and `extra_checkpoints`;
        `progress(entries checked so far)` is called every few thousand entries."""
        notes = [cp.note for cp in self.checkpoints()] + list(extra_checkpoints or [])
        if entries is not None:
            return verify(entries, notes, public_key)
        if not supported(self._store.engine):
            return verify(self.iter_entries(), notes, public_key)
        return verify_stored(self._store.engine, notes, public_key, progress, workers)


def export_checkpoint(checkpoint: StoredCheckpoint, path: Path) -> None:
    """Write the signed note to `path` (for an external witness)."""
    path.write_text(checkpoint.note, encoding="utf-8")
