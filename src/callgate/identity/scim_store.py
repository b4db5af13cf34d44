"""SCIM users and groups in the store, and the accounts they drive, inside one transaction.

A SCIM user is a row of scim_users (its document as JSON) linked to an account (users.source
"scim", users.external_id = the SCIM id). Every change to the account goes with the SCIM change
in the same transaction and is audited like the directory's: user.create / user.update /
user.disable / user.enable / user.delete by actor "identity:scim", with the mapping decision.
Deactivating (active false) or deleting revokes the account's tokens in that transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from callgate.accounts.audit import change_details, user_fields
from callgate.accounts.repository import user_record
from callgate.identity.mapping import GroupRules, decide
from callgate.records.audit import AuditLog
from callgate.storage.models import ApiToken, User
from callgate.storage.models import ScimGroup as GroupRow
from callgate.storage.models import ScimMember as MemberRow
from callgate.storage.models import ScimUser as UserRow

SOURCE = "scim"
ACTOR = "identity:scim"


@dataclass(frozen=True, slots=True)
class Profile:
    """What an account takes from its SCIM user."""

    display_name: str
    email: str | None
    active: bool


@dataclass
class Outcome:
    """Handles whose sign-in ended in this transaction (to end their sessions and calls)."""

    deprovisioned: list[str] = field(default_factory=list)


class ScimTx:
    """The SCIM tables and the linked accounts, in one session (the caller commits)."""

    def __init__(
        self, session: Session, realm: str, rules: GroupRules, now: datetime, outcome: Outcome
    ) -> None:
        self.session = session
        self._realm = realm
        self._rules = rules
        self._now = now
        self.outcome = outcome

    # -- reads ------------------------------------------------------------------------------------

    def user(self, scim_id: str) -> UserRow | None:
        return self.session.get(UserRow, scim_id)

    def user_named(self, user_name: str) -> UserRow | None:
        key = user_name.lower()
        return self.session.scalars(select(UserRow).where(UserRow.user_name_key == key)).first()

    def users(self, external_id: str | None = None) -> list[UserRow]:
        query = select(UserRow).order_by(UserRow.created_at, UserRow.id)
        if external_id is not None:
            query = query.where(UserRow.external_id == external_id)
        return list(self.session.scalars(query))

    def handle_of(self, row: UserRow) -> str:
        account = self.session.get(User, row.user_id)
        return account.handle if account is not None else ""

    def group(self, group_id: str) -> GroupRow | None:
        return self.session.get(GroupRow, group_id)

    def group_named(self, display_name: str) -> GroupRow | None:
        key = display_name.lower()
        query = select(GroupRow).where(GroupRow.display_name_key == key)
        return self.session.scalars(query).first()

    def groups(self, external_id: str | None = None) -> list[GroupRow]:
        query = select(GroupRow).order_by(GroupRow.created_at, GroupRow.id)
        if external_id is not None:
            query = query.where(GroupRow.external_id == external_id)
        return list(self.session.scalars(query))

    def groups_of(self, scim_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """SCIM user id -> [(group id, group displayName)]."""
        ids = list(scim_ids)
        found: dict[str, list[tuple[str, str]]] = {scim_id: [] for scim_id in ids}
        if not ids:
            return found
        query = (
            select(MemberRow.user_id, GroupRow.id, GroupRow.document)
            .join(GroupRow, GroupRow.id == MemberRow.group_id)
            .where(MemberRow.user_id.in_(ids))
            .order_by(GroupRow.id)
        )
        for user_id, group_id, document in self.session.execute(query):
            found[user_id].append((group_id, json.loads(document).get("displayName", "")))
        return found

    def members_of(self, group_ids: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """Group id -> [(SCIM user id, userName)]."""
        ids = list(group_ids)
        found: dict[str, list[tuple[str, str]]] = {group_id: [] for group_id in ids}
        if not ids:
            return found
        query = (
            select(MemberRow.group_id, UserRow.id, UserRow.document)
            .join(UserRow, UserRow.id == MemberRow.user_id)
            .where(MemberRow.group_id.in_(ids))
            .order_by(UserRow.id)
        )
        for group_id, user_id, document in self.session.execute(query):
            found[group_id].append((user_id, json.loads(document).get("userName", "")))
        return found

    # -- users ------------------------------------------------------------------------------------

    def add_user(
        self, handle: str, document: dict[str, Any], profile: Profile, why: dict[str, Any]
    ) -> UserRow:
        """A new account and its SCIM user (the caller checked userName and handle are free)."""
        scim_id = str(uuid.uuid4())
        decision = decide(self._rules, [])
        account = User(
            handle=handle,
            display_name=profile.display_name or handle,
            email=profile.email,
            groups=json.dumps(list(decision.groups)),
            password_hash=None,
            realm=self._realm,
            is_admin=decision.role == "admin",
            role=decision.role,
            legal_hold=False,
            disabled=not profile.active,
            source=SOURCE,
            external_id=scim_id,
            created_at=self._now,
            updated_at=self._now,
        )
        self.session.add(account)
        self.session.flush()
        row = UserRow(
            id=scim_id,
            user_id=account.id,
            user_name_key=str(document["userName"]).lower(),
            external_id=document.get("externalId"),
            document=json.dumps(document),
            version=1,
            created_at=self._now,
            updated_at=self._now,
        )
        self.session.add(row)
        details = {
            "after": user_fields(user_record(account)),
            "source": SOURCE,
            "scim_id": scim_id,
            "mapping": decision.as_json(),
            **why,
        }
        AuditLog.append_in(
            self.session.connection(), ACTOR, "user.create", f"user:{handle}", details
        )
        return row

    def save_user(self, row: UserRow, document: dict[str, Any], profile: Profile) -> None:
        """Store the new document and bring the account in step (audited when it changed)."""
        row.user_name_key = str(document["userName"]).lower()
        row.external_id = document.get("externalId")
        row.document = json.dumps(document)
        row.version += 1
        row.updated_at = self._now
        self.sync(row, profile)

    def remove_user(self, row: UserRow, why: dict[str, Any]) -> None:
        """Delete the account (its tokens, SCIM user and memberships go with it)."""
        account = self.session.get(User, row.user_id)
        if account is None:
            return
        before = user_record(account)
        affected = [g for g, _ in self.groups_of([row.id])[row.id]]
        self.session.execute(delete(MemberRow).where(MemberRow.user_id == row.id))
        self.session.delete(row)
        self.session.execute(delete(ApiToken).where(ApiToken.user_id == account.id))
        self.session.delete(account)
        details = {**change_details(before, None), "source": SOURCE, "scim_id": row.id, **why}
        AuditLog.append_in(
            self.session.connection(), ACTOR, "user.delete", f"user:{before.handle}", details
        )
        self.touch_groups(affected)
        self.outcome.deprovisioned.append(before.handle)

    def sync(self, row: UserRow, profile: Profile | None = None) -> None:
        """Bring the account in step with its SCIM user: name, e-mail and active from `profile`
        (None: unchanged), groups and role from its SCIM groups."""
        account = self.session.get(User, row.user_id)
        if account is None:
            return
        before = user_record(account)
        names = [name for _, name in self.groups_of([row.id])[row.id]]
        decision = decide(self._rules, names)
        account.groups = json.dumps(list(decision.groups))
        account.role = decision.role
        account.is_admin = decision.role == "admin"
        if profile is not None:
            account.display_name = profile.display_name or before.handle
            account.email = profile.email
            account.disabled = not profile.active
        after = user_record(account)
        details = change_details(before, after)
        if before.email != after.email:
            details["before"]["email"], details["after"]["email"] = before.email, after.email
        if not details["after"]:
            return
        account.updated_at = self._now
        action = "user.update"
        if before.disabled != after.disabled:
            action = "user.disable" if after.disabled else "user.enable"
        if after.disabled and not before.disabled:
            self.session.execute(
                update(ApiToken)
                .where(ApiToken.user_id == account.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=self._now)
            )
            self.outcome.deprovisioned.append(before.handle)
        why = {"source": SOURCE, "scim_id": row.id, "scim_groups": names}
        details = {**details, **why, "mapping": decision.as_json()}
        if action == "user.disable":
            details["reason"] = "deactivated over SCIM (active false)"
        AuditLog.append_in(
            self.session.connection(), ACTOR, action, f"user:{before.handle}", details
        )

    # -- groups -----------------------------------------------------------------------------------

    def add_group(self, document: dict[str, Any]) -> GroupRow:
        row = GroupRow(
            id=str(uuid.uuid4()),
            display_name_key=str(document["displayName"]).lower(),
            external_id=document.get("externalId"),
            document=json.dumps(document),
            version=1,
            created_at=self._now,
            updated_at=self._now,
        )
        self.session.add(row)
        self.session.flush()
        return row

    def save_group(self, row: GroupRow, document: dict[str, Any]) -> None:
        renamed = json.loads(row.document).get("displayName") != document.get("displayName")
        row.display_name_key = str(document["displayName"]).lower()
        row.external_id = document.get("externalId")
        row.document = json.dumps(document)
        row.version += 1
        row.updated_at = self._now
        if renamed:  # the mapping goes by name: every member may get other groups or role
            self.session.flush()
            for user_id, _ in self.members_of([row.id])[row.id]:
                self._resync(user_id)

    def set_members(self, row: GroupRow, members: set[str]) -> None:
        """Make `members` (SCIM user ids that exist) the group's members; the accounts that
        joined or left get their groups and role again."""
        current = {user_id for user_id, _ in self.members_of([row.id])[row.id]}
        for user_id in current - members:
            self.session.execute(
                delete(MemberRow).where(MemberRow.group_id == row.id, MemberRow.user_id == user_id)
            )
        for user_id in members - current:
            self.session.add(MemberRow(group_id=row.id, user_id=user_id))
        self.session.flush()
        for user_id in sorted(current ^ members):
            self._resync(user_id)

    def remove_group(self, row: GroupRow) -> None:
        members = [user_id for user_id, _ in self.members_of([row.id])[row.id]]
        self.session.execute(delete(MemberRow).where(MemberRow.group_id == row.id))
        self.session.delete(row)
        self.session.flush()
        for user_id in members:
            self._resync(user_id)

    def touch_groups(self, group_ids: Iterable[str]) -> None:
        """A member left these groups: their lastModified and version move on."""
        for group_id in group_ids:
            group = self.session.get(GroupRow, group_id)
            if group is not None:
                group.version += 1
                group.updated_at = self._now

    def _resync(self, scim_id: str) -> None:
        row = self.session.get(UserRow, scim_id)
        if row is not None:
            self.sync(row)
