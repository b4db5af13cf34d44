"""`callgate group …`: groups of users and their per-group TURN settings, in the store of
--data-dir (server stopped or running) or through a running server's API with --server.

Membership is the account's own list of groups (`callgate user add --group`, `group add-member`);
a group row gives the name a description and TURN settings. Every change is audited.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from callgate.cli.backend import backend
from callgate.cli.common import (
    AdminOpt,
    ConfigOpt,
    JsonOpt,
    ServerOpt,
    StoreDirOpt,
    fail,
    handle_arg,
    table_console,
)

group_app = typer.Typer(
    help="Groups of users (policy rules match them) and per-group TURN settings, in the "
    "database of --data-dir, or through a running server's API with --server (as an admin)."
)

NameArg = Annotated[str, typer.Argument(help="Group name: 1-64 of A-Z a-z 0-9 . _ -")]
HandleArg = Annotated[str, typer.Argument(help="The user's handle.", callback=handle_arg)]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin", help="With --server and --user: admin password on stdin."),
]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="Free text.")]
MaxAllocationsOpt = Annotated[
    str | None,
    typer.Option(
        "--max-allocations",
        metavar="N|none",
        help="TURN allocations per member at once (none: the server-wide limit).",
    ),
]
MaxKbpsOpt = Annotated[
    str | None,
    typer.Option(
        "--max-kbps", metavar="N|none", help="TURN bandwidth cap per allocation in kbit/s."
    ),
]
PeerRangeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--peer-range", metavar="CIDR", help="Extra peer range members may reach; repeat."
    ),
]


def _limit(value: str | None, option: str) -> int | None:
    if value is None or value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise fail(f"{option}: a whole number or 'none', got {value!r}") from None


def _show(group: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(group))
        return
    typer.echo(f"group {group['name']}: {group['description'] or '(no description)'}")
    typer.echo(f"  members: {', '.join(group['members']) or '(none)'}")
    typer.echo(f"  turn max allocations: {_text(group['turn_max_allocations'])}")
    typer.echo(f"  turn max kbps: {_text(group['turn_max_kbps'])}")
    typer.echo(f"  turn peer ranges: {', '.join(group['turn_peer_ranges']) or '(none)'}")


def _text(value: Any) -> str:
    return "server default" if value is None else str(value)


@group_app.command("create")
def group_create(
    name: NameArg,
    description: DescriptionOpt = None,
    max_allocations: MaxAllocationsOpt = None,
    max_kbps: MaxKbpsOpt = None,
    peer_range: PeerRangeOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Create a group."""
    body = {
        "name": name,
        "description": description or "",
        "turn_max_allocations": _limit(max_allocations, "--max-allocations"),
        "turn_max_kbps": _limit(max_kbps, "--max-kbps"),
        "turn_peer_ranges": peer_range or [],
    }
    with backend(server, user, password_stdin, data_dir, config) as target:
        created = target.create_group(body)
    typer.echo(f"created group {created['name']} ({len(created['members'])} member(s))")


@group_app.command("list")
def group_list(
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """List groups with their members and TURN settings."""
    with backend(server, user, password_stdin, data_dir, config) as target:
        groups = target.groups()
    if as_json:
        for group in groups:
            typer.echo(json.dumps(group))
        return
    if not groups:
        typer.echo("no groups")
        return
    table = Table("name", "members", "max allocations", "max kbps", "description", box=None)
    for g in groups:
        table.add_row(
            g["name"],
            ",".join(g["members"]),
            _text(g["turn_max_allocations"]),
            _text(g["turn_max_kbps"]),
            g["description"],
        )
    table_console().print(table)


@group_app.command("show")
def group_show(
    name: NameArg,
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Show one group."""
    with backend(server, user, password_stdin, data_dir, config) as target:
        _show(target.group(name), as_json)


@group_app.command("set")
def group_set(
    name: NameArg,
    description: DescriptionOpt = None,
    max_allocations: MaxAllocationsOpt = None,
    max_kbps: MaxKbpsOpt = None,
    peer_range: PeerRangeOpt = None,
    clear_peer_ranges: Annotated[
        bool, typer.Option("--clear-peer-ranges", help="Remove every extra peer range.")
    ] = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Change a group's description or TURN settings (only the options given)."""
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if max_allocations is not None:
        body["turn_max_allocations"] = _limit(max_allocations, "--max-allocations")
    if max_kbps is not None:
        body["turn_max_kbps"] = _limit(max_kbps, "--max-kbps")
    if peer_range or clear_peer_ranges:
        body["turn_peer_ranges"] = list(peer_range or [])
    if not body:
        raise fail("nothing to change: give --description, --max-allocations, --max-kbps, …")
    with backend(server, user, password_stdin, data_dir, config) as target:
        _show(target.update_group(name, body), False)


@group_app.command("delete")
def group_delete(
    name: NameArg,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Delete a group (refused while a policy rule names it); members leave it."""
    with backend(server, user, password_stdin, data_dir, config) as target:
        target.delete_group(name)
    typer.echo(f"deleted group {name}")


def _membership(name: str, handle: str, add: bool, where: tuple[Any, ...]) -> None:
    server, user, password_stdin, data_dir, config = where
    with backend(server, user, password_stdin, data_dir, config) as target:
        group = target.member(name, handle, add)
    verb = "added" if add else "removed"
    preposition = "to" if add else "from"
    typer.echo(
        f"{verb} {handle} {preposition} {name} (members: {', '.join(group['members']) or 'none'})"
    )


@group_app.command("add-member")
def group_add_member(
    name: NameArg,
    handle: HandleArg,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Put a user in a group."""
    _membership(name, handle, True, (server, user, password_stdin, data_dir, config))


@group_app.command("remove-member")
def group_remove_member(
    name: NameArg,
    handle: HandleArg,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Take a user out of a group."""
    _membership(name, handle, False, (server, user, password_stdin, data_dir, config))


__all__ = ["group_app"]
