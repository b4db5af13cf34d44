"""Account queries: users and api_tokens. Each method is one short transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from callgate.accounts.audit import AuditHook
from callgate.accounts.records import TokenRecord, UserRecord
from callgate.errors import UnknownUserError, UserExistsError
from callgate.storage.models import ApiToken, User
from callgate.storage.text import has_nul, storable

VALID_CHUNK = 500  # token hashes per query when many open sockets are checked at once


@dataclass(frozen=True, slots=True)
class NewUser:
    handle: str
    display_name: str
    groups: tuple[str, ...]
    realm: str
    password_hash: str | None
    role: str
    now: datetime


def user_record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id,
        handle=row.handle,
        display_name=row.display_name,
        groups=tuple(json.loads(row.groups)),
        realm=row.realm,
        is_admin=row.is_admin,
        disabled=row.disabled,
        has_password=row.password_hash is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        role=row.role,
        legal_hold=row.legal_hold,
        source=row.source,
        email=row.email,
    )


class UserRepository:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(self, new: NewUser, audit: AuditHook | None = None) -> UserRecord:
        row = User(
            handle=new.handle,
            display_name=new.display_name,
            groups=json.dumps(list(new.groups)),
            password_hash=new.password_hash,
            realm=new.realm,
            is_admin=new.role == "admin",
            role=new.role,
            legal_hold=False,
            disabled=False,
            source="local",
            created_at=new.now,
            updated_at=new.now,
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                added = user_record(row)
                if audit is not None:
                    audit(session.connection(), None, added)
                return added
        except IntegrityError as exc:
            raise UserExistsError(f"user {new.handle!r} exists") from exc

    def count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(User)) or 0)

    def get(self, handle: str) -> UserRecord | None:
        with self._sessions() as session:
            row = self._find(session, handle)
            return user_record(row) if row is not None else None

    def secrets(self, handle: str) -> tuple[UserRecord, str | None] | None:
        """The user with its password hash (for verification only)."""
        with self._sessions() as session:
            row = self._find(session, handle)
            if row is None:
                return None
            return user_record(row), row.password_hash

    def list_users(self) -> list[UserRecord]:
        with self._sessions() as session:
            return [user_record(row) for row in session.scalars(select(User).order_by(User.handle))]

    def change(
        self, handle: str, now: datetime, audit: AuditHook | None = None, **values: object
    ) -> UserRecord:
        """Set `values` on the account; `audit` (if any) is written in the same transaction."""
        with self._sessions.begin() as session:
            row = self._find(session, handle)
            if row is None:
                raise UnknownUserError(f"no user {handle!r}")
            before = user_record(row)
            for name, value in values.items():
                setattr(row, name, value)
            row.is_admin = row.role == "admin"  # one source of truth: the role
            row.updated_at = now
            session.flush()
            after = user_record(row)
            if audit is not None:
                audit(session.connection(), before, after)
            return after

    def remove(self, handle: str, audit: AuditHook | None = None) -> bool:
        with self._sessions.begin() as session:
            row = self._find(session, handle)
            if row is None:
                return False
            if audit is not None:
                audit(session.connection(), user_record(row), None)
            session.execute(delete(ApiToken).where(ApiToken.user_id == row.id))
            session.delete(row)
            return True

    @staticmethod
    def _find(session: Session, handle: str) -> User | None:
        if has_nul(handle):  # no handle holds one (and PostgreSQL would refuse the query)
            return None
        return session.scalars(select(User).where(User.handle == handle)).one_or_none()


class TokenRepository:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(
        self,
        token_hash: str,
        user_id: int,
        device: str | None,
        now: datetime,
        expires: datetime,
        audit: AuditHook | None = None,
    ) -> None:
        with self._sessions.begin() as session:
            session.add(
                ApiToken(
                    token_hash=token_hash,
                    user_id=user_id,
                    device=storable(device),
                    created_at=now,
                    expires_at=expires,
                )
            )
            if audit is not None:
                audit(session.connection(), None, None)

    def find(self, token_hash: str) -> TokenRecord | None:
        with self._sessions() as session:
            query = (
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == token_hash)
            )
            found = session.execute(query).one_or_none()
            if found is None:
                return None
            token, user = found.tuple()
            return TokenRecord(
                id=token.id,
                user=user_record(user),
                device=token.device,
                created_at=token.created_at,
                expires_at=token.expires_at,
                revoked_at=token.revoked_at,
            )

    def valid_hashes(self, hashes: Sequence[str], now: datetime) -> set[str]:
        """The hashes among `hashes` of tokens neither revoked nor expired at `now`, whose
        account is enabled: one query per VALID_CHUNK of them."""
        valid: set[str] = set()
        with self._sessions() as session:
            for start in range(0, len(hashes), VALID_CHUNK):
                query = (
                    select(ApiToken.token_hash)
                    .join(User, User.id == ApiToken.user_id)
                    .where(
                        ApiToken.token_hash.in_(hashes[start : start + VALID_CHUNK]),
                        ApiToken.revoked_at.is_(None),
                        ApiToken.expires_at > now,
                        User.disabled.is_(False),
                    )
                )
                valid.update(session.scalars(query))
        return valid

    def revoke(self, token_hash: str, now: datetime, audit: AuditHook | None = None) -> bool:
        with self._sessions.begin() as session:
            result = session.execute(
                update(ApiToken)
                .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            revoked = bool(getattr(result, "rowcount", 0))
            if revoked and audit is not None:
                audit(session.connection(), None, None)
            return revoked

    def revoke_all(self, user_id: int, now: datetime) -> int:
        with self._sessions.begin() as session:
            result = session.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return int(getattr(result, "rowcount", 0))
