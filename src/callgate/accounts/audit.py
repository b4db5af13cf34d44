"""Audit entries of account changes and sign-ins (docs/audit.md), written by the repositories
inside the transaction of the change they describe.

An account is described by what an administrator can see and change — handle, display name,
groups, role, disabled, legal hold and whether it has a password — never by its password, password
hash or TURN key. Changes carry {"before": {...}, "after": {...}} with only the fields that
changed; a new account carries "after" only, a removed one "before" only.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from callgate.accounts.records import UserRecord
from callgate.records.audit import AuditLog

SYSTEM = "system"

# Called with the transaction's connection, the account before and after the change.
AuditHook = Callable[[Connection, UserRecord | None, UserRecord | None], None]


def cli_actor() -> str:
    """The actor of a change made by the CLI directly on a data directory: "cli:<OS user>"."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry for the uid
        return "cli:unknown"


def user_fields(user: UserRecord) -> dict[str, Any]:
    return {
        "handle": user.handle,
        "display_name": user.display_name,
        "groups": list(user.groups),
        "role": user.role,
        "disabled": user.disabled,
        "legal_hold": user.legal_hold,
        "has_password": user.has_password,
    }


def change_details(before: UserRecord | None, after: UserRecord | None) -> dict[str, Any]:
    if before is None or after is None:
        return (
            {"before": user_fields(before)}
            if before
            else {"after": user_fields(after)}
            if after
            else {}
        )
    old, new = user_fields(before), user_fields(after)
    changed = [k for k in new if old[k] != new[k]]
    return {"before": {k: old[k] for k in changed}, "after": {k: new[k] for k in changed}}


def user_change(actor: str, action: str, handle: str) -> AuditHook:
    """The hook writing `action` on user:<handle> with the before/after of the change."""

    def write(conn: Connection, before: UserRecord | None, after: UserRecord | None) -> None:
        details = change_details(before, after)
        if action == "user.update" and not details.get("after"):
            return  # nothing changed (a password change is logged even though nothing shows)
        AuditLog.append_in(conn, actor, action, f"user:{handle}", details)

    return write


def sign_in(user: UserRecord, client: str | None, device: str | None) -> AuditHook:
    def write(conn: Connection, _before: UserRecord | None, _after: UserRecord | None) -> None:
        details = {"client": client, "device": device}
        AuditLog.append_in(conn, user.handle, "auth.login", f"user:{user.handle}", details)

    return write


def sign_out(user: UserRecord, client: str | None) -> AuditHook:
    def write(conn: Connection, _before: UserRecord | None, _after: UserRecord | None) -> None:
        details = {"client": client}
        AuditLog.append_in(conn, user.handle, "auth.logout", f"user:{user.handle}", details)

    return write
