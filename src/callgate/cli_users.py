"""`callgate user …`: accounts, managed directly in the store (works with the server stopped).

An account signs in with its password, and the same password works as TURN long-term
credentials on the relay. Static TURN-only users from earlier versions are listed and removable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from callgate.cli_common import (
    ConfigOpt,
    JsonOpt,
    PasswordStdinOpt,
    StoreDirOpt,
    fail,
    open_settings_store,
    read_password,
    settings_from,
    table_console,
)
from callgate.errors import AccountError, UnknownUserError

if TYPE_CHECKING:
    from callgate.accounts.service import AccountService
    from callgate.storage.repositories import TurnUserRepository

user_app = typer.Typer(help="Accounts: sign-in and TURN credentials, stored in the database.")

RealmOpt = Annotated[
    str | None, typer.Option("--realm", help="TURN realm (default from config: callgate).")
]
HandleArg = Annotated[str, typer.Argument(help="Handle: 1-64 of a-z 0-9 . _ -")]


def _services(
    config: Path | None, data_dir: Path | None, realm: str | None
) -> tuple[AccountService, TurnUserRepository]:
    from callgate.accounts.service import AccountService
    from callgate.storage.repositories import TurnUserRepository

    settings = settings_from(config, {"data_dir": data_dir, "turn": {"realm": realm}})
    store = open_settings_store(settings)
    return AccountService(store, settings.turn.realm), TurnUserRepository(store.sessions)


@user_app.command("add")
def user_add(
    handle: HandleArg,
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="Shown to callees (default: handle).")
    ] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="Group; repeat.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Administrator.")] = False,
    password_stdin: PasswordStdinOpt = False,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add an account. Password: --password-stdin, env CALLGATE_PASSWORD, or a prompt (terminal).

    Stored: an argon2id hash and MD5(handle:realm:password) for TURN — never the password.
    """
    accounts, _ = _services(config, data_dir, realm)
    password = read_password(password_stdin)
    try:
        user = accounts.create_user(handle, display_name, group or (), password, is_admin=admin)
    except AccountError as exc:
        raise fail(str(exc), code=1) from None
    role = "administrator" if user.is_admin else "user"
    typer.echo(f"added {role} {user.handle} (realm {user.realm})")


@user_app.command("list")
def user_list(
    as_json: JsonOpt = False,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List accounts (and static TURN-only users, if any)."""
    accounts, turn_users = _services(config, data_dir, realm)
    rows: list[dict[str, Any]] = [
        {
            "handle": u.handle,
            "display_name": u.display_name,
            "groups": list(u.groups),
            "admin": u.is_admin,
            "disabled": u.disabled,
            "kind": "account",
            "realm": u.realm,
            "created_at": u.created_at.isoformat().replace("+00:00", "Z"),
        }
        for u in accounts.list_users()
    ]
    rows += [
        {
            "handle": t.name,
            "display_name": "",
            "groups": [],
            "admin": False,
            "disabled": False,
            "kind": "turn-only",
            "realm": t.realm,
            "created_at": t.created_at.isoformat().replace("+00:00", "Z"),
        }
        for t in turn_users.list_users()
    ]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    if not rows:
        typer.echo("no users")
        return
    table = Table("handle", "name", "groups", "admin", "state", "kind", "realm", box=None)
    for row in rows:
        table.add_row(
            str(row["handle"]),
            str(row["display_name"]),
            ",".join(row["groups"]),
            "yes" if row["admin"] else "",
            "disabled" if row["disabled"] else "enabled",
            str(row["kind"]),
            str(row["realm"]),
        )
    table_console().print(table)


def _set_disabled(handle: str, disabled: bool, data_dir: Path | None, config: Path | None) -> None:
    accounts, _ = _services(config, data_dir, None)
    try:
        accounts.set_disabled(handle, disabled)
    except UnknownUserError:
        raise fail(f"no user {handle!r}", code=1) from None
    typer.echo(f"{'disabled' if disabled else 'enabled'} {handle}")


@user_app.command("disable")
def user_disable(handle: str, data_dir: StoreDirOpt = None, config: ConfigOpt = None) -> None:
    """Disable an account: no sign-in, its tokens and TURN key refused (within seconds)."""
    _set_disabled(handle, True, data_dir, config)


@user_app.command("enable")
def user_enable(handle: str, data_dir: StoreDirOpt = None, config: ConfigOpt = None) -> None:
    """Enable a disabled account."""
    _set_disabled(handle, False, data_dir, config)


@user_app.command("passwd")
def user_passwd(
    handle: str,
    password_stdin: PasswordStdinOpt = False,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set an account's password (and its TURN key). Password as for `user add`."""
    accounts, _ = _services(config, data_dir, realm)
    if accounts.get(handle) is None:
        raise fail(f"no user {handle!r}", code=1)
    password = read_password(password_stdin)
    try:
        accounts.set_password(handle, password)
    except AccountError as exc:
        raise fail(str(exc), code=1) from None
    typer.echo(f"password changed for {handle}")


@user_app.command("remove")
def user_remove(
    handle: str, realm: RealmOpt = None, data_dir: StoreDirOpt = None, config: ConfigOpt = None
) -> None:
    """Remove an account (its tokens go too), or a static TURN-only user of the realm."""
    accounts, turn_users = _services(config, data_dir, realm)
    try:
        accounts.remove(handle)
    except UnknownUserError:
        if turn_users.remove(handle, accounts.realm) == 0:
            raise fail(f"no user {handle!r}", code=1) from None
        typer.echo(f"removed TURN-only user {handle} (realm {accounts.realm})")
        return
    typer.echo(f"removed user {handle}")
