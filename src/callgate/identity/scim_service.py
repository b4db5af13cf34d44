"""SCIM 2.0 provisioning (RFC 7644 §3): create, read, list with filters, replace, PATCH and
delete Users and Groups, each in one transaction with the accounts it drives (scim_store.py).

Errors are scim2-models' SCIMExceptions, answered as SCIM Error documents (scim_routes.py): a
payload that does not validate, an unknown attribute, a filter or PATCH path that names nothing
(400, saying what), a userName, handle or group name that is taken (409), an unknown id (404).
Nothing is half-done: the transaction rolls back on any of them.

Filters are evaluated with scim2-models on the stored resources; `userName eq`, `externalId eq`
and `displayName eq` (Groups) are answered by an index instead, which is what provisioning
clients send to find a resource before creating it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from scim2_models import (
    Context,
    Group,
    InvalidValueException,
    ListResponse,
    NotFoundException,
    PatchOp,
    ResponseParameters,
    SCIMException,
    ScimFilter,
    SearchRequest,
    UniquenessException,
)
from scim2_models.path import CompareOperator, Comparison
from sqlalchemy import select

from callgate.identity.mapping import GroupRules, handle_from
from callgate.identity.scim_model import (
    ScimUser,
    display_name_of,
    email_of,
    parse,
    refuse_password,
)
from callgate.identity.scim_store import Outcome, Profile, ScimTx
from callgate.identity.settings import ScimSettings
from callgate.records.audit import AuditLog
from callgate.storage.db import Store
from callgate.storage.models import ScimGroup as GroupRow
from callgate.storage.models import ScimUser as UserRow
from callgate.storage.models import User

log = logging.getLogger(__name__)
T = TypeVar("T")
Result = tuple[dict[str, Any], list[str]]  # (the SCIM document, handles deprovisioned)
KEEP_OUT = ("id", "meta", "groups", "members", "password")  # never in a stored document
INDEXED = {"username": "user", "externalid": "any", "displayname": "group"}


class ScimService:
    def __init__(self, settings: ScimSettings, store: Store, realm: str) -> None:
        self._settings = settings
        self._sessions = store.sessions
        self._realm = realm
        self._rules = GroupRules(
            group_map=settings.group_map,
            role_map=settings.role_map,
            default_role=settings.default_role,
        )

    def _transaction(
        self, work: Callable[[ScimTx], T], action: str, target: str
    ) -> tuple[T, Outcome]:
        outcome = Outcome()
        with self._sessions.begin() as session:
            tx = ScimTx(session, self._realm, self._rules, datetime.now(UTC), outcome)
            result = work(tx)
            AuditLog.append_in(session.connection(), "identity:scim", action, target, None)
        return result, outcome

    # -- users ------------------------------------------------------------------------------------

    def create_user(self, payload: Any, base: str) -> Result:
        user = parse(ScimUser, payload, Context.RESOURCE_CREATION_REQUEST)
        refuse_password(user)
        handle = handle_from(user.user_name or "")
        if handle is None:
            raise InvalidValueException(
                detail=f"userName {str(user.user_name)[:64]!r} gives no usable handle "
                "(1-64 of a-z 0-9 . _ - before any @)"
            )

        def work(tx: ScimTx) -> dict[str, Any]:
            if tx.user_named(user.user_name) is not None:
                raise UniquenessException(detail=f"userName {user.user_name!r} exists")
            taken = tx.session.scalars(select(User.id).where(User.handle == handle)).first()
            if taken is not None:
                raise UniquenessException(
                    detail=f"userName {user.user_name!r} gives the handle {handle!r}, which "
                    "belongs to another account"
                )
            row = tx.add_user(handle, _stored(user), _profile(user, handle), {})
            return self._render_user(tx, row, base)

        (document, outcome) = self._transaction(work, "scim.user.create", f"user:{handle}")
        log.info("SCIM: account %s created", handle)
        return document, outcome.deprovisioned

    def get_user(self, scim_id: str, query: dict[str, str], base: str) -> dict[str, Any]:
        with self._sessions() as session:
            tx = ScimTx(session, self._realm, self._rules, datetime.now(UTC), Outcome())
            row = _found(tx.user(scim_id), "User", scim_id)
            return _select(self._render_user(tx, row, base), query, ScimUser)

    def replace_user(self, scim_id: str, payload: Any, base: str) -> Result:
        given = parse(ScimUser, payload, Context.RESOURCE_REPLACEMENT_REQUEST)
        refuse_password(given)

        def work(tx: ScimTx) -> dict[str, Any]:
            row = _found(tx.user(scim_id), "User", scim_id)
            original = self._user_model(tx, row, base)
            given.replace(original)  # RFC 7644 §3.5.1: read-only and immutable attributes
            return self._store_user(tx, row, given, base)

        return self._user_change(work, scim_id, "scim.user.replace")

    def patch_user(self, scim_id: str, payload: Any, base: str) -> Result:
        patch = parse(PatchOp[ScimUser], payload, Context.RESOURCE_PATCH_REQUEST)

        def work(tx: ScimTx) -> dict[str, Any]:
            row = _found(tx.user(scim_id), "User", scim_id)
            user = self._user_model(tx, row, base)
            patch.patch(user)  # RFC 7644 §3.5.2
            refuse_password(user)
            checked = parse(ScimUser, _stored(user), Context.RESOURCE_REPLACEMENT_REQUEST)
            return self._store_user(tx, row, checked, base)

        return self._user_change(work, scim_id, "scim.user.patch")

    def delete_user(self, scim_id: str) -> list[str]:
        def work(tx: ScimTx) -> None:
            row = _found(tx.user(scim_id), "User", scim_id)
            tx.remove_user(row, {"reason": "deleted over SCIM"})

        _, outcome = self._transaction(work, "scim.user.delete", f"scim-user:{scim_id}")
        log.info("SCIM: account %s deleted", ", ".join(outcome.deprovisioned))
        return outcome.deprovisioned

    def _user_change(
        self, work: Callable[[ScimTx], dict[str, Any]], scim_id: str, action: str
    ) -> Result:
        document, outcome = self._transaction(work, action, f"scim-user:{scim_id}")
        return document, outcome.deprovisioned

    def _store_user(self, tx: ScimTx, row: UserRow, user: Any, base: str) -> dict[str, Any]:
        other = tx.user_named(user.user_name)
        if other is not None and other.id != row.id:
            raise UniquenessException(detail=f"userName {user.user_name!r} exists")
        handle = tx.handle_of(row)
        tx.save_user(row, _stored(user), _profile(user, handle))
        return self._render_user(tx, row, base)

    def list_users(self, query: dict[str, Any], base: str) -> dict[str, Any]:
        return self._list(query, base, ScimUser, "user")

    def search_users(self, body: Any, base: str) -> dict[str, Any]:
        """POST /Users/.search (RFC 7644 §3.4.3): the query in a SearchRequest body."""
        return self._list(_search_body(body), base, ScimUser, "user")

    # -- groups -----------------------------------------------------------------------------------

    def create_group(self, payload: Any, base: str) -> Result:
        group = parse(Group, payload, Context.RESOURCE_CREATION_REQUEST)

        def work(tx: ScimTx) -> dict[str, Any]:
            if tx.group_named(group.display_name) is not None:
                raise UniquenessException(detail=f"group {group.display_name!r} exists")
            row = tx.add_group(_stored(group, members=True))
            tx.set_members(row, _member_ids(tx, group))
            return self._render_group(tx, row, base)

        document, outcome = self._transaction(
            work, "scim.group.create", f"scim-group:{group.display_name}"[:255]
        )
        return document, outcome.deprovisioned

    def get_group(self, group_id: str, query: dict[str, str], base: str) -> dict[str, Any]:
        with self._sessions() as session:
            tx = ScimTx(session, self._realm, self._rules, datetime.now(UTC), Outcome())
            row = _found(tx.group(group_id), "Group", group_id)
            return _select(self._render_group(tx, row, base), query, Group)

    def replace_group(self, group_id: str, payload: Any, base: str) -> Result:
        given = parse(Group, payload, Context.RESOURCE_REPLACEMENT_REQUEST)

        def work(tx: ScimTx) -> dict[str, Any]:
            row = _found(tx.group(group_id), "Group", group_id)
            given.replace(self._group_model(tx, row, base))
            return self._store_group(tx, row, given, base)

        document, outcome = self._transaction(work, "scim.group.replace", f"scim-group:{group_id}")
        return document, outcome.deprovisioned

    def patch_group(self, group_id: str, payload: Any, base: str) -> Result:
        patch = parse(PatchOp[Group], payload, Context.RESOURCE_PATCH_REQUEST)

        def work(tx: ScimTx) -> dict[str, Any]:
            row = _found(tx.group(group_id), "Group", group_id)
            group = self._group_model(tx, row, base)
            patch.patch(group)
            checked = parse(
                Group, _stored(group, members=True), Context.RESOURCE_REPLACEMENT_REQUEST
            )
            return self._store_group(tx, row, checked, base)

        document, outcome = self._transaction(work, "scim.group.patch", f"scim-group:{group_id}")
        return document, outcome.deprovisioned

    def delete_group(self, group_id: str) -> list[str]:
        def work(tx: ScimTx) -> None:
            tx.remove_group(_found(tx.group(group_id), "Group", group_id))

        _, outcome = self._transaction(work, "scim.group.delete", f"scim-group:{group_id}")
        return outcome.deprovisioned

    def _store_group(self, tx: ScimTx, row: GroupRow, group: Group, base: str) -> dict[str, Any]:
        other = tx.group_named(group.display_name or "")
        if other is not None and other.id != row.id:
            raise UniquenessException(detail=f"group {group.display_name!r} exists")
        tx.save_group(row, _stored(group, members=True))
        tx.set_members(row, _member_ids(tx, group))
        return self._render_group(tx, row, base)

    def list_groups(self, query: dict[str, Any], base: str) -> dict[str, Any]:
        return self._list(query, base, Group, "group")

    def search_groups(self, body: Any, base: str) -> dict[str, Any]:
        return self._list(_search_body(body), base, Group, "group")

    # -- rendering --------------------------------------------------------------------------------

    def _user_model(self, tx: ScimTx, row: UserRow, base: str) -> Any:
        return ScimUser.model_validate(self._render_user(tx, row, base))

    def _group_model(self, tx: ScimTx, row: GroupRow, base: str) -> Group:
        return Group.model_validate(self._render_group(tx, row, base))

    def _render_user(
        self, tx: ScimTx, row: UserRow, base: str, groups: Any = None
    ) -> dict[str, Any]:
        document = json.loads(row.document)
        memberships = groups if groups is not None else tx.groups_of([row.id])[row.id]
        if memberships:
            document["groups"] = [
                {"value": gid, "display": name, "$ref": f"{base}/Groups/{gid}", "type": "direct"}
                for gid, name in memberships
            ]
        return _with_meta(document, row, "User", f"{base}/Users/{row.id}")

    def _render_group(
        self, tx: ScimTx, row: GroupRow, base: str, members: Any = None
    ) -> dict[str, Any]:
        document = json.loads(row.document)
        # Who is a member comes from scim_members; a member's `display` as the client gave it.
        given = {m.get("value"): m.get("display") for m in document.pop("members", None) or []}
        found = members if members is not None else tx.members_of([row.id])[row.id]
        if found:
            document["members"] = [
                {
                    "value": uid,
                    "display": given.get(uid) or name,
                    "$ref": f"{base}/Users/{uid}",
                    "type": "User",
                }
                for uid, name in found
            ]
        return _with_meta(document, row, "Group", f"{base}/Groups/{row.id}")

    def _list(self, query: dict[str, Any], base: str, model: Any, kind: str) -> dict[str, Any]:
        """RFC 7644 §3.4.2: filter, startIndex (1-based), count; attributes and
        excludedAttributes select what each resource carries."""
        search = parse(SearchRequest, _search_params(query), Context.SEARCH_REQUEST)
        bound: Any = None
        if search.filter is not None:
            try:
                bound = ScimFilter[model](str(search.filter))
                bound._validate_semantics()
            except SCIMException:
                raise
        with self._sessions() as session:
            tx = ScimTx(session, self._realm, self._rules, datetime.now(UTC), Outcome())
            documents = self._candidates(tx, base, kind, bound)
        resources = [model.model_validate(d) for d in documents]
        if bound is not None:
            resources = [r for r in resources if bound.match(r)]
        start = max(search.start_index or 1, 1)
        count = self._settings.max_results if search.count is None else max(search.count, 0)
        count = min(count, self._settings.max_results)
        page = resources[start - 1 : start - 1 + count]
        listed = ListResponse[model](
            total_results=len(resources),
            start_index=start,
            items_per_page=len(page),
            resources=page,
        )
        dumped: dict[str, Any] = listed.model_dump(
            scim_ctx=Context.SEARCH_RESPONSE, response_parameters=search
        )
        return dumped

    def _candidates(self, tx: ScimTx, base: str, kind: str, bound: Any) -> list[dict[str, Any]]:
        """The documents the filter can match: one index lookup for `ATTR eq "value"` on an
        indexed attribute, else every resource of the kind."""
        ast = bound.ast if bound is not None else None
        exact: str | None = None  # the attribute (lower-cased) of an indexed `eq`
        value = ""
        if (
            isinstance(ast, Comparison)
            and ast.op == CompareOperator.eq
            and isinstance(ast.value, str)
            and ast.attr_path.sub_attr is None
            and INDEXED.get(ast.attr_path.attr.lower()) in (kind, "any")
        ):
            exact, value = ast.attr_path.attr.lower(), ast.value
        if kind == "user":
            if exact == "username":
                named = tx.user_named(value)
                rows = [named] if named is not None else []
            else:
                rows = tx.users(value if exact else None)
            groups = tx.groups_of([r.id for r in rows])
            return [self._render_user(tx, r, base, groups[r.id]) for r in rows]
        if exact == "displayname":
            named_group = tx.group_named(value)
            group_rows = [named_group] if named_group is not None else []
        else:
            group_rows = tx.groups(value if exact else None)
        members = tx.members_of([r.id for r in group_rows])
        return [self._render_group(tx, r, base, members[r.id]) for r in group_rows]


def _found(row: T | None, kind: str, resource_id: str) -> T:
    if row is None:
        raise NotFoundException(detail=f"no {kind} {resource_id[:64]!r}")
    return row


def _stored(resource: Any, members: bool = False) -> dict[str, Any]:
    """The document to keep: no id, meta, groups or password; a group's members (with
    `members`) as value, display and type only."""
    dumped: dict[str, Any] = resource.model_dump(scim_ctx=Context.DEFAULT)
    stored = {k: v for k, v in dumped.items() if k not in KEEP_OUT}
    if members and dumped.get("members"):
        stored["members"] = [
            {k: v for k, v in member.items() if k in ("value", "display", "type")}
            for member in dumped["members"]
        ]
    return stored


def _profile(user: Any, handle: str) -> Profile:
    return Profile(
        display_name=display_name_of(user, handle),
        email=email_of(user),
        active=user.active is not False,
    )


def _member_ids(tx: ScimTx, group: Group) -> set[str]:
    """The SCIM user ids listed as members; each must be a user here (no nested groups)."""
    found: set[str] = set()
    for member in group.members or []:
        value = member.value or ""
        if tx.user(value) is None:
            raise InvalidValueException(
                detail=f"member {value[:64]!r} is not a User here (members must be users)"
            )
        found.add(value)
    return found


def _with_meta(document: dict[str, Any], row: Any, kind: str, location: str) -> dict[str, Any]:
    return {
        **document,
        "id": row.id,
        "meta": {
            "resourceType": kind,
            "created": row.created_at.isoformat(),
            "lastModified": row.updated_at.isoformat(),
            "location": location,
            "version": f'W/"{row.version}"',
        },
    }


def _search_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidValueException(detail="a SearchRequest must be a JSON object")
    return body


def _search_params(query: dict[str, Any]) -> dict[str, Any]:
    known = ("filter", "startIndex", "count", "attributes", "excludedAttributes")
    return {k: v for k, v in query.items() if k in known}


def _select(document: dict[str, Any], query: dict[str, str], model: Any) -> dict[str, Any]:
    """`attributes` / `excludedAttributes` of a GET (RFC 7644 §3.9)."""
    params = parse(ResponseParameters, _search_params(query), Context.RESOURCE_QUERY_REQUEST)
    dumped: dict[str, Any] = model.model_validate(document).model_dump(
        scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=params
    )
    return dumped
