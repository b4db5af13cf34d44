"""`callgate cdr list`: call detail records, read directly from the store."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from callgate.cli.common import (
    ConfigOpt,
    JsonOpt,
    StoreDirOpt,
    fail,
    open_settings_store,
    settings_from,
    table_console,
)

if TYPE_CHECKING:
    from callgate.records.cdr_types import CdrRecord

cdr_app = typer.Typer(help="Call detail records.")

_RELATIVE = re.compile(r"-(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC when no offset) or relative: -30m, -1h, -2d, -90s."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since: expected ISO 8601 or -30m/-1h/-2d, got {text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _print_table(records: list[CdrRecord]) -> None:
    table = Table(
        "invite (UTC)", "caller", "callee", "disposition", "reason", "ended by", "duration",
        "media", "relay", box=None,
    )  # fmt: skip
    for r in records:
        table.add_row(
            _time(r.invite_at),
            r.caller_user,
            r.callee_user,
            r.disposition or "(open)",
            r.reason or "",
            r.ended_by or "",
            f"{r.duration_s:.1f}s" if r.duration_s is not None else "",
            r.media_path or "",
            r.relay_used or "",
        )
    table_console().print(table)


@cdr_app.command("list")
def cdr_list(
    as_json: JsonOpt = False,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO 8601 time, or -30m / -1h / -2d.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    user: Annotated[
        str | None, typer.Option("--user", help="Only calls this handle made or received.")
    ] = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Call records, newest first (`cdr export` for all of them, with filters)."""
    from callgate.records.cdr import CdrRepository

    try:
        start = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    store = open_settings_store(settings_from(config, {"data_dir": data_dir}))
    try:
        records = CdrRepository(store).list(since=start, limit=limit, user=user)
    finally:
        store.close()
    if as_json:
        for record in records:
            typer.echo(json.dumps(record.as_json()))
    elif records:
        _print_table(records)
    else:
        typer.echo("no calls")
