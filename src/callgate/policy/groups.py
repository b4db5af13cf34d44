"""Groups: a name with a description and per-group TURN settings; membership is users.groups.

Membership stays in the account (users.groups, a JSON array) so accounts, sign-in and the hub's
one-query lookup of a caller's groups keep working unchanged. A user may name a group that has no
row here (accounts created before groups existed): policy still matches it; `add-member` needs
the group row. Deleting a group that a rule still names is refused (409): a rule silently losing
its group would change who it matches. Every change is audited in its own transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from callgate.clock import Clock, SystemClock
from callgate.policy.errors import InvalidPolicyValue, PolicyConflict, UnknownPolicyObject
from callgate.policy.specs import GROUP_FIELDS, GroupSpec, check_name
from callgate.records.audit import AuditLog
from callgate.storage.db import Store
from callgate.storage.models import Group, PolicyRule, User


@dataclass(frozen=True, slots=True)
class GroupView:
    spec: GroupSpec
    members: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {**self.spec.as_json(), "members": list(self.members)}


def _spec(row: Group) -> GroupSpec:
    return GroupSpec(
        name=row.name,
        description=row.description,
        turn_max_allocations=row.turn_max_allocations,
        turn_max_kbps=row.turn_max_kbps,
        turn_peer_ranges=tuple(json.loads(row.turn_peer_ranges or "[]")),
    )


def _members(session: Session) -> dict[str, list[str]]:
    """group name -> handles, from every account's groups."""
    found: dict[str, list[str]] = {}
    for handle, groups in session.execute(select(User.handle, User.groups).order_by(User.handle)):
        for group in json.loads(groups):
            found.setdefault(group, []).append(handle)
    return found


class GroupStore:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock.wall(), dt.UTC)

    def list_groups(self) -> list[GroupView]:
        with self._store.sessions() as session:
            members = _members(session)
            rows = session.scalars(select(Group).order_by(Group.name))
            return [GroupView(_spec(r), tuple(members.get(r.name, ()))) for r in rows]

    def members_of(self, name: str) -> tuple[str, ...]:
        """The enabled accounts in group `name`, in handle order: whom a ring group rings
        (docs/sip.md). Narrowed by LIKE in the database, then checked exactly."""
        quoted = json.dumps(name)
        query = (
            select(User.handle, User.groups)
            .where(User.disabled.is_(False), User.groups.contains(quoted, autoescape=True))
            .order_by(User.handle)
        )
        with self._store.sessions() as session:
            return tuple(h for h, groups in session.execute(query) if name in json.loads(groups))

    def known(self, name: str) -> bool:
        """A group with a row, or one an account names (accounts may predate group rows)."""
        with self._store.sessions() as session:
            if session.scalars(select(Group.id).where(Group.name == name)).first() is not None:
                return True
            quoted = json.dumps(name)
            query = select(User.groups).where(User.groups.contains(quoted, autoescape=True))
            return any(name in json.loads(groups) for groups in session.scalars(query))

    def get(self, name: str) -> GroupView:
        with self._store.sessions() as session:
            row = _existing(session, name)
            return GroupView(_spec(row), tuple(_members(session).get(name, ())))

    def create(self, actor: str, spec: GroupSpec) -> GroupView:
        now = self._now()
        with self._store.sessions.begin() as session:
            row = Group(
                name=spec.name,
                description=spec.description,
                turn_max_allocations=spec.turn_max_allocations,
                turn_max_kbps=spec.turn_max_kbps,
                turn_peer_ranges=json.dumps(list(spec.turn_peer_ranges)),
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise PolicyConflict(f"group {spec.name!r} exists") from None
            view = GroupView(spec, tuple(_members(session).get(spec.name, ())))
            AuditLog.append_in(
                session.connection(),
                actor,
                "group.create",
                f"group:{spec.name}",
                {"after": view.as_json()},
            )
        return view

    def update(self, actor: str, name: str, changes: Mapping[str, Any]) -> GroupView:
        """Change description and/or TURN settings (the name stays: rules refer to it)."""
        unknown = set(changes) - (GROUP_FIELDS - {"name"})
        if unknown:
            raise InvalidPolicyValue(f"cannot change {', '.join(sorted(unknown))} of a group")
        now = self._now()
        with self._store.sessions.begin() as session:
            row = _existing(session, name)
            before = _spec(row)
            after = GroupSpec.parse({**before.as_json(), **changes, "name": name})
            row.description = after.description
            row.turn_max_allocations = after.turn_max_allocations
            row.turn_max_kbps = after.turn_max_kbps
            row.turn_peer_ranges = json.dumps(list(after.turn_peer_ranges))
            row.updated_at = now
            details = {"before": before.as_json(), "after": after.as_json()}
            AuditLog.append_in(
                session.connection(), actor, "group.update", f"group:{name}", details
            )
            return GroupView(after, tuple(_members(session).get(name, ())))

    def delete(self, actor: str, name: str) -> GroupView:
        """Remove the group and its name from every member; 409 while a rule names it."""
        now = self._now()
        with self._store.sessions.begin() as session:
            row = _existing(session, name)
            used = session.scalars(
                select(PolicyRule.id).where(
                    (PolicyRule.caller_group == name) | (PolicyRule.callee_group == name)
                )
            ).all()
            if used:
                ids = ", ".join(str(i) for i in used)
                raise PolicyConflict(f"group {name!r} is used by rule(s) {ids}: change them first")
            view = GroupView(_spec(row), tuple(_members(session).get(name, ())))
            for user in session.scalars(select(User).where(User.handle.in_(view.members))):
                user.groups = json.dumps([g for g in json.loads(user.groups) if g != name])
                user.updated_at = now
            session.delete(row)
            session.flush()
            AuditLog.append_in(
                session.connection(),
                actor,
                "group.delete",
                f"group:{name}",
                {"before": view.as_json()},
            )
        return view

    def add_member(self, actor: str, name: str, handle: str) -> GroupView:
        return self._membership(actor, name, handle, add=True)

    def remove_member(self, actor: str, name: str, handle: str) -> GroupView:
        return self._membership(actor, name, handle, add=False)

    def _membership(self, actor: str, name: str, handle: str, *, add: bool) -> GroupView:
        now = self._now()
        with self._store.sessions.begin() as session:
            row = _existing(session, name)
            user = session.scalars(select(User).where(User.handle == handle)).one_or_none()
            if user is None:
                raise UnknownPolicyObject(f"no user {handle!r}")
            before = json.loads(user.groups)
            groups = set(before)
            if (name in groups) == add:
                state = "already" if add else "not"
                raise PolicyConflict(f"user {handle!r} is {state} in group {name!r}")
            groups = groups | {name} if add else groups - {name}
            user.groups = json.dumps(sorted(groups))
            user.updated_at = now
            session.flush()
            action = "group.member_add" if add else "group.member_remove"
            details = {"user": handle, "before": before, "after": sorted(groups)}
            AuditLog.append_in(session.connection(), actor, action, f"group:{name}", details)
            return GroupView(_spec(row), tuple(_members(session).get(name, ())))


def _existing(session: Session, name: str) -> Group:
    check_name(name, "group name")
    row = session.scalars(select(Group).where(Group.name == name)).one_or_none()
    if row is None:
        raise UnknownPolicyObject(f"no group {name!r}")
    return row
