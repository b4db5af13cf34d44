"""`callgate policy …`: the ordered call rules, the default action and time zone, and `explain`,
in the store of --data-dir or through a running server's API with --server (docs/policy.md).

Rules are evaluated by position, first match decides; no match → the default action. A change
reaches running servers within a second and is audited with its before and after.
"""

from __future__ import annotations

import json
from datetime import datetime
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
    table_console,
)
from callgate.policy.errors import InvalidPolicyValue
from callgate.policy.rules import DAY_NAMES
from callgate.policy.specs import parse_days

policy_app = typer.Typer(
    help="Call policy: ordered allow/deny rules evaluated before anyone rings, in the database "
    "of --data-dir, or through a running server's API with --server (as an admin)."
)

PasswordStdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin", help="With --server and --user: admin password on stdin."),
]
RuleIdArg = Annotated[int, typer.Argument(help="The rule's id (see `policy list`).", min=1)]
FromUser = Annotated[str | None, typer.Option("--from-user", help="Caller is this user.")]
FromGroup = Annotated[str | None, typer.Option("--from-group", help="Caller is in this group.")]
ToUser = Annotated[str | None, typer.Option("--to-user", help="Callee is this user.")]
ToGroup = Annotated[str | None, typer.Option("--to-group", help="Callee is in this group.")]
FromNumber = Annotated[
    str | None,
    typer.Option("--from-number", help='Caller\'s number starts with this (+44…) or "anonymous".'),
]
ToNumber = Annotated[
    str | None, typer.Option("--to-number", help="Callee's number starts with this (+44…).")
]
DirectionOpt = Annotated[
    str | None,
    typer.Option("--direction", help="any, internal, outbound (to numbers), inbound (from them)."),
]
Days = Annotated[
    str | None,
    typer.Option("--days", help="Weekdays: mon-fri, sat,sun, 0-6 (0 = Mon); default every day."),
]
Window = Annotated[
    str | None,
    typer.Option(
        "--window", metavar="HH:MM-HH:MM", help="Local time window; 22:00-06:00 crosses midnight."
    ),
]
Wall = Annotated[
    bool | None, typer.Option("--wall/--no-wall", help="Ethical wall: match both directions.")
]
RelayOnly = Annotated[
    bool | None, typer.Option("--relay-only/--no-relay-only", help="Allow: media via our relay.")
]
MaxDuration = Annotated[
    int | None,
    typer.Option("--max-duration", metavar="SECONDS", help="Allow: end the call after (0: none)."),
]
Recording = Annotated[
    bool | None,
    typer.Option(
        "--recording-required/--no-recording-required",
        help="Allow: the call is recorded on the server, or does not connect.",
    ),
]
Reason = Annotated[str | None, typer.Option("--reason", help="Told to a denied caller.")]
Enabled = Annotated[
    bool | None, typer.Option("--enabled/--disabled", help="Disabled rules are not evaluated.")
]


def _window(text: str) -> dict[str, str] | None:
    if text == "":
        return None
    start, sep, end = text.partition("-")
    if not sep:
        raise fail(f"--window: HH:MM-HH:MM, got {text!r}")
    return {"start": start.strip(), "end": end.strip()}


def _days(text: str) -> list[int] | None:
    try:
        days = parse_days(text)
    except InvalidPolicyValue as exc:
        raise fail(str(exc)) from None
    return list(days) if days is not None else None


def _apply(body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The rule body with every option that was given applied ("" clears a party or window)."""
    parties = {"from_user": ("caller", "user"), "from_group": ("caller", "group"),
               "to_user": ("callee", "user"), "to_group": ("callee", "group"),
               "from_number": ("caller", "number"), "to_number": ("callee", "number")}  # fmt: skip
    for option, (side, key) in parties.items():
        if options[option] is not None:
            body[side] = {**(body.get(side) or {}), key: options[option] or None}
    if options["days"] is not None:
        body["days"] = _days(options["days"])
    if options["window"] is not None:
        body["window"] = _window(options["window"])
    if options["max_duration"] is not None:
        body["max_duration_s"] = options["max_duration"] or None
    for option, key in (("wall", "wall"), ("relay_only", "relay_only"), ("enabled", "enabled"),
                        ("direction", "direction"),
                        ("recording", "recording_required"), ("reason", "reason")):  # fmt: skip
        if options[option] is not None:
            body[key] = options[option]
    return body


def _summary(rule: dict[str, Any]) -> str:
    def party(p: dict[str, Any]) -> str:
        parts = [
            f"user {p['user']}" if p.get("user") else "",
            f"group {p['group']}" if p.get("group") else "",
            f"number {p['number']}…" if p.get("number") else "",
        ]
        return " in ".join(x for x in parts if x) or "anyone"

    arrow = "<->" if rule["wall"] else "->"
    when = ""
    if rule["days"] is not None:
        when += " " + ",".join(DAY_NAMES[d] for d in rule["days"])
    if rule["window"] is not None:
        when += f" {rule['window']['start']}-{rule['window']['end']}"
    extras = [
        text
        for text, on in (
            ("relay only", rule["relay_only"]),
            (f"max {rule['max_duration_s']} s", rule["max_duration_s"] is not None),
            ("recording required", rule["recording_required"]),
        )
        if on
    ]
    direction = rule.get("direction", "any")
    when += f" [{direction}]" if direction != "any" else ""
    return f"{party(rule['caller'])} {arrow} {party(rule['callee'])}{when}" + (
        f" ({', '.join(extras)})" if extras else ""
    )


@policy_app.command("list")
def policy_list(
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """The rules in evaluation order, and the default action."""
    with backend(server, user, password_stdin, data_dir, config) as target:
        policy = target.policy()
    if as_json:
        typer.echo(json.dumps(policy))
        return
    typer.echo(
        f"default action: {policy['default_action']}; time zone: {policy['time_zone']}; "
        f"{len(policy['rules'])} rule(s)"
    )
    if not policy["rules"]:
        return
    table = Table("pos", "id", "name", "action", "match", "state", "reason", box=None)
    for rule in policy["rules"]:
        table.add_row(
            str(rule["position"]),
            str(rule["id"]),
            rule["name"],
            rule["action"],
            _summary(rule),
            "enabled" if rule["enabled"] else "disabled",
            rule["reason"],
        )
    table_console().print(table)


@policy_app.command("add")
def policy_add(
    name: Annotated[str, typer.Argument(help="Rule name: 1-64 of A-Z a-z 0-9 . _ -")],
    action: Annotated[str, typer.Argument(help="allow or deny")],
    from_user: FromUser = None,
    from_group: FromGroup = None,
    to_user: ToUser = None,
    to_group: ToGroup = None,
    from_number: FromNumber = None,
    to_number: ToNumber = None,
    direction: DirectionOpt = None,
    days: Days = None,
    window: Window = None,
    wall: Wall = None,
    relay_only: RelayOnly = None,
    max_duration: MaxDuration = None,
    recording: Recording = None,
    reason: Reason = None,
    enabled: Enabled = None,
    position: Annotated[
        int | None, typer.Option("--position", min=1, help="Insert here (default: last).")
    ] = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Add a rule, e.g. `policy add wall deny --from-group sales --to-group legal --wall`."""
    options = dict(locals())
    body = _apply({"name": name, "action": action}, options)
    if position is not None:
        body["position"] = position
    with backend(server, user, password_stdin, data_dir, config) as target:
        rule = target.add_rule(body)
    typer.echo(f"added rule {rule['id']} {rule['name']} at position {rule['position']}: "
               f"{rule['action']} {_summary(rule)}")  # fmt: skip


@policy_app.command("update")
def policy_update(
    rule_id: RuleIdArg,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="allow or deny")] = None,
    from_user: FromUser = None,
    from_group: FromGroup = None,
    to_user: ToUser = None,
    to_group: ToGroup = None,
    from_number: FromNumber = None,
    to_number: ToNumber = None,
    direction: DirectionOpt = None,
    days: Days = None,
    window: Window = None,
    wall: Wall = None,
    relay_only: RelayOnly = None,
    max_duration: MaxDuration = None,
    recording: Recording = None,
    reason: Reason = None,
    enabled: Enabled = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Change the options given of a rule ("" clears a user, group, --days or --window)."""
    options = dict(locals())
    with backend(server, user, password_stdin, data_dir, config) as target:
        current = target.rule(rule_id)
        body = {k: v for k, v in current.items()
                if k not in ("id", "position", "created_at", "updated_at")}  # fmt: skip
        if name is not None:
            body["name"] = name
        if action is not None:
            body["action"] = action
        rule = target.put_rule(rule_id, _apply(body, options))
    typer.echo(f"updated rule {rule['id']} {rule['name']}: {rule['action']} {_summary(rule)}")


@policy_app.command("remove")
def policy_remove(
    rule_id: RuleIdArg,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Delete a rule (the rules after it move up)."""
    with backend(server, user, password_stdin, data_dir, config) as target:
        target.delete_rule(rule_id)
    typer.echo(f"removed rule {rule_id}")


@policy_app.command("move")
def policy_move(
    rule_id: RuleIdArg,
    position: Annotated[int, typer.Argument(help="New position (1 = evaluated first).", min=1)],
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Move a rule to another position."""
    with backend(server, user, password_stdin, data_dir, config) as target:
        rule = target.move_rule(rule_id, position)
    typer.echo(f"rule {rule['id']} {rule['name']} is now at position {rule['position']}")


@policy_app.command("default")
def policy_default(
    action: Annotated[str | None, typer.Argument(help="allow or deny (omit to show).")] = None,
    time_zone: Annotated[
        str | None,
        typer.Option("--time-zone", help="IANA zone time windows are read in, e.g. Europe/Paris."),
    ] = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Show or set the default action (when no rule matches) and the policy's time zone."""
    with backend(server, user, password_stdin, data_dir, config) as target:
        if action is None and time_zone is None:
            settings = target.policy()
        else:
            settings = target.settings({"default_action": action, "time_zone": time_zone})
    typer.echo(f"default action: {settings['default_action']}; time zone: {settings['time_zone']}")


@policy_app.command("explain")
def policy_explain(
    caller: Annotated[str, typer.Argument(help="The caller's handle.")],
    callee: Annotated[str, typer.Argument(help="The callee's handle.")],
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="TIME",
            help="ISO 8601, e.g. 2026-11-27T23:30 (policy time zone) or …+01:00; default now.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Which rule decides a call from CALLER to CALLEE, and why each rule before it did not."""
    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise fail(f"--at: not an ISO 8601 time: {at!r}") from None
    with backend(server, user, password_stdin, data_dir, config) as target:
        result = target.explain(caller, callee, when)
    from callgate.policy.explain import render  # imported late: it loads the store

    typer.echo(json.dumps(result) if as_json else render(result, caller, callee))
