"""Repositories: the only code that issues queries. Each method is one short transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from callgate.errors import UserExistsError
from callgate.storage.models import RelaySession, TurnUser, from_unix, utcnow
from callgate.types.events import AllocationEvent, EventKind


@dataclass(frozen=True, slots=True)
class TurnUserRecord:
    name: str
    realm: str
    key_hex: str
    created_at: datetime


def _user_record(row: TurnUser) -> TurnUserRecord:
    return TurnUserRecord(row.name, row.realm, row.key_hex, row.created_at)


class TurnUserRepository:
    """Static TURN users (long-term credentials); keys only, never passwords."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(self, name: str, realm: str, key: bytes, *, replace: bool = False) -> None:
        with self._sessions.begin() as session:
            row = self._find(session, name, realm)
            if row is not None and not replace:
                raise UserExistsError(f"TURN user {name!r} exists in realm {realm!r}")
            if row is None:
                session.add(TurnUser(name=name, realm=realm, key_hex=key.hex()))
            else:
                row.key_hex = key.hex()
            try:
                session.flush()
            except IntegrityError as exc:  # a concurrent add of the same name
                raise UserExistsError(f"TURN user {name!r} exists in realm {realm!r}") from exc

    def remove(self, name: str, realm: str | None = None) -> int:
        """Delete `name` (in `realm`, or in every realm when None); return how many rows went."""
        with self._sessions.begin() as session:
            query = select(TurnUser).where(TurnUser.name == name)
            if realm is not None:
                query = query.where(TurnUser.realm == realm)
            rows = session.scalars(query).all()
            for row in rows:
                session.delete(row)
            return len(rows)

    def list_users(self, realm: str | None = None) -> list[TurnUserRecord]:
        with self._sessions() as session:
            query = select(TurnUser).order_by(TurnUser.realm, TurnUser.name)
            if realm is not None:
                query = query.where(TurnUser.realm == realm)
            return [_user_record(row) for row in session.scalars(query)]

    def key(self, name: str, realm: str) -> bytes | None:
        with self._sessions() as session:
            row = self._find(session, name, realm)
            return bytes.fromhex(row.key_hex) if row is not None else None

    @staticmethod
    def _find(session: Session, name: str, realm: str) -> TurnUser | None:
        query = select(TurnUser).where(TurnUser.name == name, TurnUser.realm == realm)
        return session.scalars(query).one_or_none()


def _new_session_row(event: AllocationEvent, relay_id: str | None) -> RelaySession:
    return RelaySession(
        relay_id=relay_id,
        allocation_id=event.allocation_id,
        username=event.username,
        user=event.user,
        client_ip=event.client[0],
        client_port=event.client[1],
        transport=event.transport.value,
        relay_ip=event.relay[0],
        relay_port=event.relay[1],
        server_ip=event.server[0],
        server_port=event.server[1],
        started_at=from_unix(event.started),
        lifetime=event.lifetime,
        peers="[]",
        packets_to_peer=0,
        bytes_to_peer=0,
        packets_to_client=0,
        bytes_to_client=0,
    )


def apply_event(
    session: Session, event: AllocationEvent, relay_id: str | None = None
) -> RelaySession:
    """Upsert the relay_sessions row for `event` (insert on first sight, then update); a new row
    is marked with `relay_id`, the relay that wrote it."""
    row = session.scalars(
        select(RelaySession).where(RelaySession.allocation_id == event.allocation_id)
    ).one_or_none()
    if row is None:
        row = _new_session_row(event, relay_id)
        session.add(row)
    peers = set(json.loads(row.peers)) | set(event.peers)
    row.peers = json.dumps(sorted(peers))
    # Totals in events are cumulative; never let a late event move them backwards.
    row.packets_to_peer = max(row.packets_to_peer, event.packets_to_peer)
    row.bytes_to_peer = max(row.bytes_to_peer, event.bytes_to_peer)
    row.packets_to_client = max(row.packets_to_client, event.packets_to_client)
    row.bytes_to_client = max(row.bytes_to_client, event.bytes_to_client)
    if event.kind is EventKind.DELETED:
        row.ended_at = from_unix(event.time)
        row.end_reason = event.end_reason or "unknown"
    elif event.kind in (EventKind.CREATED, EventKind.REFRESHED):
        row.lifetime = event.lifetime
    row.updated_at = utcnow()
    return row


class RelaySessionRepository:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        also: Callable[[Connection, AllocationEvent], object] | None = None,
        relay_id: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._also = also
        self._relay_id = relay_id

    def apply(self, events: Sequence[AllocationEvent]) -> None:
        """Apply events in order, in one transaction; `also(conn, event)` (given at construction)
        runs in it after each event (the relay.session audit entry of a DELETED event)."""
        with self._sessions.begin() as session:
            for event in events:
                apply_event(session, event, self._relay_id)
                session.flush()
                if self._also is not None:
                    self._also(session.connection(), event)

    def get(self, allocation_id: str) -> RelaySession | None:
        with self._sessions() as session:
            query = select(RelaySession).where(RelaySession.allocation_id == allocation_id)
            return session.scalars(query).one_or_none()

    def recent(self, limit: int = 100, *, active_only: bool = False) -> list[RelaySession]:
        with self._sessions() as session:
            query = select(RelaySession).order_by(RelaySession.started_at.desc()).limit(limit)
            if active_only:
                query = query.where(RelaySession.ended_at.is_(None))
            return list(session.scalars(query))
