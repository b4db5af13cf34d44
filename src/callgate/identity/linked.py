"""Accounts that come from a directory (users.source = ldap | oidc): found by the directory's
stable id, created just in time, kept in step with the directory, disabled when it drops them.

Every change is audited in its own transaction with the directory's mapping decision: the
entry's action is the usual user.create / user.update / user.disable, its details also say
`source` and why. Such accounts have no password here (password_hash stays NULL): local sign-in
and TURN long-term keys never work for them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from callgate.accounts.audit import change_details, user_fields
from callgate.accounts.records import UserRecord
from callgate.accounts.repository import user_record
from callgate.errors import UnknownUserError, UserExistsError
from callgate.records.audit import AuditLog
from callgate.storage.db import Store
from callgate.storage.models import ApiToken, User


class LinkedAccounts:
    def __init__(self, store: Store, realm: str) -> None:
        self._sessions = store.sessions
        self._realm = realm

    def find(self, source: str, external_id: str) -> UserRecord | None:
        with self._sessions() as session:
            row = session.scalars(
                select(User).where(User.source == source, User.external_id == external_id)
            ).one_or_none()
            return user_record(row) if row is not None else None

    def linked(self, source: str) -> list[tuple[UserRecord, str]]:
        """The enabled accounts of `source` with their directory ids."""
        with self._sessions() as session:
            rows = session.scalars(
                select(User).where(User.source == source, User.disabled.is_(False))
            )
            return [(user_record(row), row.external_id or "") for row in rows]

    def create(
        self,
        source: str,
        external_id: str,
        profile: dict[str, Any],
        now: datetime,
        why: dict[str, Any],
    ) -> UserRecord:
        """A new account of `source`: profile has handle, display_name, email, groups, role."""
        row = User(
            handle=profile["handle"],
            display_name=profile["display_name"],
            email=profile["email"],
            groups=json.dumps(list(profile["groups"])),
            password_hash=None,
            realm=self._realm,
            is_admin=profile["role"] == "admin",
            role=profile["role"],
            legal_hold=False,
            disabled=False,
            source=source,
            external_id=external_id,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()
                added = user_record(row)
                details = {"after": user_fields(added), "source": source, **why}
                AuditLog.append_in(
                    session.connection(),
                    f"identity:{source}",
                    "user.create",
                    f"user:{added.handle}",
                    details,
                )
                return added
        except IntegrityError as exc:
            raise UserExistsError(f"user {profile['handle']!r} exists") from exc

    def refresh(
        self, user: UserRecord, profile: dict[str, Any], now: datetime, why: dict[str, Any]
    ) -> UserRecord:
        """Bring display name, e-mail, groups and role in step with the directory (audited as
        user.update when something changed)."""
        with self._sessions.begin() as session:
            row = session.get(User, user.id)
            if row is None:
                raise UnknownUserError(f"no user {user.handle!r}")
            before = user_record(row)
            row.display_name = profile["display_name"]
            row.email = profile["email"]
            row.groups = json.dumps(list(profile["groups"]))
            row.role = profile["role"]
            row.is_admin = profile["role"] == "admin"
            after = user_record(row)
            details = change_details(before, after)
            if before.email != after.email:
                details["before"]["email"], details["after"]["email"] = before.email, after.email
            if not details["after"]:
                return before
            row.updated_at = now
            source = before.source
            AuditLog.append_in(
                session.connection(),
                f"identity:{source}",
                "user.update",
                f"user:{before.handle}",
                {**details, "source": source, **why},
            )
            return user_record(row)

    def disable(self, user: UserRecord, now: datetime, reason: str) -> UserRecord:
        """Disable the account and revoke all its tokens, in one transaction (audited)."""
        with self._sessions.begin() as session:
            row = session.get(User, user.id)
            if row is None:
                raise UnknownUserError(f"no user {user.handle!r}")
            before = user_record(row)
            row.disabled = True
            row.updated_at = now
            session.execute(
                update(ApiToken)
                .where(ApiToken.user_id == row.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            after = user_record(row)
            details = {**change_details(before, after), "source": before.source, "reason": reason}
            AuditLog.append_in(
                session.connection(),
                f"identity:{before.source}",
                "user.disable",
                f"user:{before.handle}",
                details,
            )
            return after
