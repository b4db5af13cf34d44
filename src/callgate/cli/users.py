"""`callgate user …`: accounts, managed directly in the store of `--data-dir` (works with the
server stopped), or with `--server URL` through a running server's REST API (/api/users) as an admin.
Each command is written once against user_backend.py, which does either.

An account signs in with its password; its password never opens the relay (signed-in clients get
short-lived TURN REST credentials in `hello`). Static TURN-only users from earlier versions are
listed and removable (in the store only: the API manages accounts); relay-only users are
configured with `turn.users` / `--user NAME:PASSWORD`.

Through the API the admin's token comes from the `callgate login` session for that server, or a
sign-in as `--user ADMIN` (env CALLGATE_USER) whose password is CALLGATE_ADMIN_PASSWORD — or,
for the commands that read no new password (list, disable, enable, remove), `--password-stdin`
or CALLGATE_PASSWORD. `add` and `passwd` keep those two for the account's new password.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

import typer
from rich.table import Table

from callgate.cli.common import (
    AdminOpt,
    ConfigOpt,
    JsonOpt,
    PasswordStdinOpt,
    ServerOpt,
    StoreDirOpt,
    fail,
    handle_arg,
    read_password,
    table_console,
)
from callgate.cli.user_backend import user_backend

Role = Literal["admin", "compliance", "security", "user"]

user_app = typer.Typer(
    help="Accounts (sign-in; the relay takes the REST credentials handed out after sign-in), in "
    "the database of --data-dir, or through a "
    "running server's API with --server (as an admin)."
)

RealmOpt = Annotated[
    str | None, typer.Option("--realm", help="TURN realm (default from config: callgate).")
]
# Handles are case-insensitive: `BOB` is bob (accounts/handles.py).
HandleArg = Annotated[
    str, typer.Argument(help="Handle: 1-64 of a-z 0-9 . _ -", callback=handle_arg)
]
RoleOpt = Annotated[
    Role | None,
    typer.Option(
        "--role",
        help="admin (everything), compliance (read records and audit, export), security "
        "(unmanaged-calling findings) or user (own calls only; the default).",
    ),
]
_ROLE_WORDS = {
    "admin": "administrator",
    "compliance": "compliance officer",
    "security": "security officer",
    "user": "user",
}
AdminPasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="With --server and --user: read the admin's password from stdin's first line.",
    ),
]


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

    Stored: an argon2id hash — never the password, nor anything else derived from it.
    """
    if admin and role not in (None, "admin"):
        raise fail("--admin and --role disagree")
    role = "admin" if admin else (role or "user")
    with user_backend(
        server,
        user,
        password_stdin,
        data_dir=data_dir,
        config=config,
        realm=realm,
        new_password=True,
    ) as b:
        password = read_password(password_stdin)
        added = b.add(handle, display_name, group or [], password, role)
    typer.echo(f"added {_ROLE_WORDS[added['role']]} {added['handle']} (realm {added['realm']})")


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
    with user_backend(
        server, user, password_stdin, data_dir=data_dir, config=config, realm=realm
    ) as b:
        rows = b.rows()
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


def _state_command(disabled: bool, doc: str) -> Callable[..., None]:
    """`user disable` and `user enable`: one command body, two names."""
    word = "disabled" if disabled else "enabled"

    def command(
        handle: HandleArg,
        data_dir: StoreDirOpt = None,
        config: ConfigOpt = None,
        server: ServerOpt = None,
        user: AdminOpt = None,
        password_stdin: AdminPasswordStdinOpt = False,
    ) -> None:
        with user_backend(server, user, password_stdin, data_dir=data_dir, config=config) as b:
            b.set_disabled(handle, disabled)
        typer.echo(f"{word} {handle}")

    command.__doc__ = doc
    return command


user_disable = user_app.command("disable")(
    _state_command(
        True,
        "Disable an account: no sign-in, its tokens and TURN credentials refused (within seconds).",
    )
)
user_enable = user_app.command("enable")(_state_command(False, "Enable a disabled account."))


@user_app.command("set-role")
def user_set_role(
    handle: HandleArg,
    role: Annotated[Role, typer.Argument(help="admin, compliance, security or user.")],
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: AdminPasswordStdinOpt = False,
) -> None:
    """Change an account's role (through the API, an admin cannot change their own)."""
    with user_backend(server, user, password_stdin, data_dir=data_dir, config=config) as b:
        b.set_role(handle, role)
    typer.echo(f"{handle} is now {_ROLE_WORDS[role]}")


@user_app.command("passwd")
def user_passwd(
    handle: HandleArg,
    password_stdin: PasswordStdinOpt = False,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
) -> None:
    """Set an account's password. Password as for `user add`."""
    with user_backend(
        server,
        user,
        password_stdin,
        data_dir=data_dir,
        config=config,
        realm=realm,
        new_password=True,
    ) as b:
        b.set_password(handle, lambda: read_password(password_stdin))
    typer.echo(f"password changed for {handle}")


@user_app.command("remove")
def user_remove(
    handle: HandleArg,
    realm: RealmOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: AdminPasswordStdinOpt = False,
) -> None:
    """Remove an account (its tokens go too), or a static TURN-only user of the realm (store only)."""
    with user_backend(
        server, user, password_stdin, data_dir=data_dir, config=config, realm=realm
    ) as b:
        removed = b.remove(handle)
    typer.echo(removed)
