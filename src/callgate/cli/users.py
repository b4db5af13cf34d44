"""`callgate user …`: accounts, managed directly in the store of `--data-dir` (works with the
server stopped), or with `--server URL` through a running server's REST API (/api/users) as an admin.

An account signs in with its password, and the same password works as TURN long-term
credentials on the relay. Static TURN-only users from earlier versions are listed and removable
(in the store only: the API manages accounts).

Through the API the admin's token comes from the `callgate login` session for that server, or a
sign-in as `--user ADMIN` (env CALLGATE_USER) whose password is CALLGATE_ADMIN_PASSWORD — or,
for the commands that read no new password (list, disable, enable, remove), `--password-stdin`
or CALLGATE_PASSWORD. `add` and `passwd` keep those two for the account's new password.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import typer
from rich.table import Table

from callgate.cli.common import (
    AdminOpt,
    ConfigOpt,
    JsonOpt,
    PasswordStdinOpt,
    ServerOpt,
    StoreDirOpt,
    admin_api,
    admin_password,
    api_server,
    fail,
    open_settings_store,
    read_password,
    settings_from,
    table_console,
)
from callgate.errors import AccountError, UnknownUserError

Role = Literal["admin", "compliance", "user"]

if TYPE_CHECKING:
    from callgate.accounts.service import AccountService
    from callgate.storage.repositories import TurnUserRepository

user_app = typer.Typer(
    help="Accounts: sign-in and TURN credentials, in the database of --data-dir, or through a "
    "running server's API with --server (as an admin)."
)

RealmOpt = Annotated[
    str | None, typer.Option("--realm", help="TURN realm (default from config: callgate).")
]
HandleArg = Annotated[str, typer.Argument(help="Handle: 1-64 of a-z 0-9 . _ -")]
RoleOpt = Annotated[
    Role | None,
    typer.Option(
        "--role",
        help="admin (everything), compliance (read records and audit, export) or user "
        "(own calls only; the default).",
    ),
]
_ROLE_WORDS = {"admin": "administrator", "compliance": "compliance officer", "user": "user"}
AdminPasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="With --server and --user: read the admin's password from stdin's first line.",
    ),
]


def _services(
    config: Path | None, data_dir: Path | None, realm: str | None
) -> tuple[AccountService, TurnUserRepository]:
    from callgate.accounts.service import AccountService
    from callgate.storage.repositories import TurnUserRepository

    settings = settings_from(config, {"data_dir": data_dir, "turn": {"realm": realm}})
    store = open_settings_store(settings)
    return AccountService(store, settings.turn.realm), TurnUserRepository(store.sessions)


def _target(server: str | None, password_stdin: bool, **store_options: object) -> str | None:
    """The API URL (--server / CALLGATE_SERVER), or None to work on the store directly."""
    url = api_server(server, **store_options)
    if url is None and password_stdin:
        raise fail("--password-stdin is the admin's password: only with --server")
    return url


def _path(handle: str, action: str = "") -> str:
    return f"/api/users/{quote(handle, safe='')}" + (f"/{action}" if action else "")


@user_app.command("add")
def user_add(
    handle: HandleArg,
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="Shown to callees (default: handle).")
    ] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="Group; repeat.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Administrator (= --role admin).")] = False,
    role: RoleOpt = None,
    password_stdin: PasswordStdinOpt = False,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
) -> None:
    """Add an account. Password: --password-stdin, env CALLGATE_PASSWORD, or a prompt (terminal).

    Stored: an argon2id hash and MD5(handle:realm:password) for TURN — never the password.
    """
    if admin and role not in (None, "admin"):
        raise fail("--admin and --role disagree")
    role = "admin" if admin else (role or "user")
    url = _target(server, False, data_dir=data_dir, realm=realm, config=config)
    password = read_password(password_stdin)
    if url is not None:
        body = {
            "handle": handle,
            "display_name": display_name,
            "groups": group or [],
            "password": password,
            "role": role,
        }
        with admin_api(url, user, admin_password(user, password_options_free=False)) as api:
            added = api.call("POST", "/api/users", body)
        typer.echo(f"added {_ROLE_WORDS[added['role']]} {added['handle']} (realm {added['realm']})")
        return
    accounts, _ = _services(config, data_dir, realm)
    try:
        created = accounts.create_user(
            handle, display_name, group or (), password, role=role, actor=cli_actor()
        )
    except AccountError as exc:
        raise fail(str(exc), code=1) from None
    typer.echo(f"added {_ROLE_WORDS[created.role]} {created.handle} (realm {created.realm})")


def cli_actor() -> str:
    """The audit actor of a change made here on a data directory: "cli:<OS user>"."""
    from callgate.accounts.audit import cli_actor as actor

    return actor()


def _timestamp(value: Any) -> str:
    text = value if isinstance(value, str) else value.isoformat()
    return str(text).replace("+00:00", "Z")


def _account_row(u: dict[str, Any]) -> dict[str, Any]:
    return {
        "handle": u["handle"],
        "display_name": u["display_name"],
        "groups": list(u["groups"]),
        "admin": u["is_admin"],
        "role": u.get("role", "admin" if u["is_admin"] else "user"),
        "disabled": u["disabled"],
        "kind": "account",
        "realm": u["realm"],
        "created_at": _timestamp(u["created_at"]),
    }


def _store_rows(accounts: AccountService, turn_users: TurnUserRepository) -> list[dict[str, Any]]:
    rows = [_account_row(asdict(u)) for u in accounts.list_users()]
    rows += [
        {
            "handle": t.name,
            "display_name": "",
            "groups": [],
            "admin": False,
            "role": "",
            "disabled": False,
            "kind": "turn-only",
            "realm": t.realm,
            "created_at": _timestamp(t.created_at),
        }
        for t in turn_users.list_users()
    ]
    return rows


@user_app.command("list")
def user_list(
    as_json: JsonOpt = False,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: AdminPasswordStdinOpt = False,
) -> None:
    """List accounts (and, in the store, static TURN-only users, if any)."""
    url = _target(server, password_stdin, data_dir=data_dir, realm=realm, config=config)
    if url is not None:
        with admin_api(url, user, admin_password(user, password_stdin)) as api:
            rows = [_account_row(u) for u in api.call("GET", "/api/users")["users"]]
    else:
        rows = _store_rows(*_services(config, data_dir, realm))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    if not rows:
        typer.echo("no users")
        return
    table = Table("handle", "name", "groups", "role", "state", "kind", "realm", box=None)
    for row in rows:
        table.add_row(
            str(row["handle"]),
            str(row["display_name"]),
            ",".join(row["groups"]),
            str(row["role"]),
            "disabled" if row["disabled"] else "enabled",
            str(row["kind"]),
            str(row["realm"]),
        )
    table_console().print(table)


def _set_disabled(
    handle: str,
    disabled: bool,
    data_dir: Path | None,
    config: Path | None,
    api: tuple[str | None, str | None, bool],
) -> None:
    server, user, password_stdin = api
    url = _target(server, password_stdin, data_dir=data_dir, config=config)
    action = "disable" if disabled else "enable"
    if url is not None:
        with admin_api(url, user, admin_password(user, password_stdin)) as client:
            client.call("POST", _path(handle, action))
    else:
        accounts, _ = _services(config, data_dir, None)
        try:
            accounts.set_disabled(handle, disabled, cli_actor())
        except UnknownUserError:
            raise fail(f"no user {handle!r}", code=1) from None
    typer.echo(f"{action}d {handle}")


@user_app.command("disable")
def user_disable(
    handle: str,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: AdminPasswordStdinOpt = False,
) -> None:
    """Disable an account: no sign-in, its tokens and TURN key refused (within seconds)."""
    _set_disabled(handle, True, data_dir, config, (server, user, password_stdin))


@user_app.command("enable")
def user_enable(
    handle: str,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: AdminPasswordStdinOpt = False,
) -> None:
    """Enable a disabled account."""
    _set_disabled(handle, False, data_dir, config, (server, user, password_stdin))


@user_app.command("set-role")
def user_set_role(
    handle: str,
    role: Annotated[Role, typer.Argument(help="admin, compliance or user.")],
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: AdminPasswordStdinOpt = False,
) -> None:
    """Change an account's role (through the API, an admin cannot change their own)."""
    url = _target(server, password_stdin, data_dir=data_dir, config=config)
    if url is not None:
        with admin_api(url, user, admin_password(user, password_stdin)) as client:
            client.call("PATCH", _path(handle), {"role": role})
    else:
        accounts, _ = _services(config, data_dir, None)
        try:
            accounts.set_role(handle, role, cli_actor())
        except UnknownUserError:
            raise fail(f"no user {handle!r}", code=1) from None
    typer.echo(f"{handle} is now {_ROLE_WORDS[role]}")


@user_app.command("passwd")
def user_passwd(
    handle: str,
    password_stdin: PasswordStdinOpt = False,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
) -> None:
    """Set an account's password (and its TURN key). Password as for `user add`."""
    url = _target(server, False, data_dir=data_dir, realm=realm, config=config)
    if url is not None:
        password = read_password(password_stdin)
        with admin_api(url, user, admin_password(user, password_options_free=False)) as api:
            api.call("PUT", _path(handle, "password"), {"password": password})
        typer.echo(f"password changed for {handle}")
        return
    accounts, _ = _services(config, data_dir, realm)
    if accounts.get(handle) is None:
        raise fail(f"no user {handle!r}", code=1)
    password = read_password(password_stdin)
    try:
        accounts.set_password(handle, password, cli_actor())
    except AccountError as exc:
        raise fail(str(exc), code=1) from None
    typer.echo(f"password changed for {handle}")


@user_app.command("remove")
def user_remove(
    handle: str,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: AdminPasswordStdinOpt = False,
) -> None:
    """Remove an account (its tokens go too), or a static TURN-only user of the realm (store only)."""
    url = _target(server, password_stdin, data_dir=data_dir, realm=realm, config=config)
    if url is not None:
        with admin_api(url, user, admin_password(user, password_stdin)) as api:
            api.call("DELETE", _path(handle))
        typer.echo(f"removed user {handle}")
        return
    accounts, turn_users = _services(config, data_dir, realm)
    try:
        accounts.remove(handle, cli_actor())
    except UnknownUserError:
        if turn_users.remove(handle, accounts.realm) == 0:
            raise fail(f"no user {handle!r}", code=1) from None
        typer.echo(f"removed TURN-only user {handle} (realm {accounts.realm})")
        return
    typer.echo(f"removed user {handle}")
