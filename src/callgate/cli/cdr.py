"""`callgate cdr list`: call detail records, from the store or through a running server's API
(`--server` / CALLGATE_SERVER, as an admin or compliance officer)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.table import Table

from callgate.cli.common import (
    ConfigOpt,
    JsonOpt,
    ReaderOpt,
    ServerOpt,
    StoreDirOpt,
    admin_api,
    admin_password,
    api_server,
    open_settings_store,
    settings_from,
    table_console,
)
from callgate.cli.times import time_option

cdr_app = typer.Typer(
    help="Call detail records: `list` from the database of --data-dir or through a running "
    "server's API with --server (as an admin or compliance officer); `export` from the database."
)


def _time(value: str | None) -> str:
    """An ISO 8601 time of a record as `YYYY-MM-DD HH:MM:SS` (UTC)."""
    if not value:
        return ""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")


def _print_table(records: list[dict[str, Any]]) -> None:
    table = Table(
        "invite (UTC)", "caller", "callee", "disposition", "reason", "ended by", "duration",
        "media", "relay", box=None,
    )  # fmt: skip
    for r in records:
        duration = r.get("duration_s")
        table.add_row(
            _time(r.get("invite_at")),
            r["caller_user"],
            r["callee_user"],
            r.get("disposition") or "(open)",
            r.get("reason") or "",
            r.get("ended_by") or "",
            f"{duration:.1f}s" if duration is not None else "",
            r.get("media_path") or "",
            r.get("relay_used") or "",
        )
    table_console().print(table)


def _from_store(data_dir: Path | None, config: Path | None, **where: Any) -> list[dict[str, Any]]:
    from callgate.records.cdr import CdrRepository

    store = open_settings_store(settings_from(config, {"data_dir": data_dir}))
    try:
        return [record.as_json() for record in CdrRepository(store).list(**where)]
    finally:
        store.close()


def _from_server(
    url: str, admin: str | None, since: datetime | None, limit: int, user: str | None
) -> list[dict[str, Any]]:
    """GET /api/cdrs page by page (newest first) until `limit` records or the last page."""
    records: list[dict[str, Any]] = []
    query: dict[str, str] = {}
    if since is not None:
        query["since"] = since.isoformat()
    if user is not None:
        query["party"] = user
    with admin_api(url, admin, admin_password(admin)) as api:
        while len(records) < limit:
            page = {**query, "limit": str(min(1000, limit - len(records)))}
            body = api.call("GET", f"/api/cdrs?{urlencode(page)}")
            records.extend(body["items"])
            if not body.get("next_cursor"):
                break
            query["cursor"] = body["next_cursor"]
    return records[:limit]


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
    server: ServerOpt = None,
    admin: ReaderOpt = None,
) -> None:
    """Call records, newest first. Search by more fields and export: `callgate cdr export`,
    the console's Records page, or GET /api/cdrs."""
    start = time_option("--since", since)
    url = api_server(server, data_dir=data_dir, config=config)
    if url is None:
        records = _from_store(data_dir, config, since=start, limit=limit, user=user)
    else:
        records = _from_server(url, admin, start, limit, user)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record))
    elif records:
        _print_table(records)
    else:
        typer.echo("no calls")
