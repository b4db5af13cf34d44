"""`callgate retention show | set | purge | hold`: retention periods, legal hold and the purge
job, on the store of `--data-dir` (records/retention.py; every change is audited, actor
"system")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from callgate.cli.common import ConfigOpt, StoreDirOpt, fail, open_settings_store, settings_from

if TYPE_CHECKING:
    from callgate.storage.db import Store

retention_app = typer.Typer(help="Retention periods, legal hold and the purge job.")
DaysOpt = Annotated[int | None, typer.Option(min=0, help="Days; 0 = keep forever.")]


def _store(data_dir: Path | None, config: Path | None) -> Store:
    return open_settings_store(settings_from(config, {"data_dir": data_dir}))


@retention_app.command("show")
def retention_show(data_dir: StoreDirOpt = None, config: ConfigOpt = None) -> None:
    """Days each record class is kept (null: forever)."""
    from callgate.records.retention import Retention

    store = _store(data_dir, config)
    try:
        typer.echo(json.dumps(Retention(store.engine).settings()))
    finally:
        store.close()


@retention_app.command("set")
def retention_set(
    cdr_days: DaysOpt = None,
    quality_days: DaysOpt = None,
    audit_days: DaysOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Change the periods given (others stay as they are)."""
    from callgate.records.retention import Retention

    given = {"cdr": cdr_days, "quality": quality_days, "audit": audit_days}
    changes = {k: (v or None) for k, v in given.items() if v is not None}
    if not changes:
        raise fail("give --cdr-days, --quality-days and/or --audit-days")
    store = _store(data_dir, config)
    try:
        typer.echo(json.dumps(Retention(store.engine).set_settings(changes, "system")))
    finally:
        store.close()


@retention_app.command("purge")
def retention_purge(data_dir: StoreDirOpt = None, config: ConfigOpt = None) -> None:
    """Delete records past retention, never held ones; what went is written to the audit log.
    Audit entries go only after the whole chain verified with the audit key (audit.key_file)."""
    from callgate.records.retention import Retention
    from callgate.runtime.audit import key_path

    settings = settings_from(config, {"data_dir": data_dir})
    store = open_settings_store(settings)
    try:
        result = Retention(store.engine, key_path(settings)).purge("system")
    finally:
        store.close()
    typer.echo(
        f"deleted {result.cdr} call records, {result.quality} quality rows, "
        f"{result.audit} audit entries; kept {result.held_calls_kept} held calls"
    )


@retention_app.command("hold")
def retention_hold(
    user: Annotated[
        str | None, typer.Option("--user", help="Hold every record of this user.")
    ] = None,
    call: Annotated[str | None, typer.Option("--call", help="Hold this call's records.")] = None,
    release: Annotated[bool, typer.Option("--release", help="Lift the hold.")] = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Put a user or a call on legal hold (or --release it)."""
    from callgate.records.retention import Retention

    if (user is None) == (call is None):
        raise fail("give exactly one of --user and --call")
    store = _store(data_dir, config)
    try:
        retention = Retention(store.engine)
        found = (
            retention.hold_user(user, not release, "system")
            if user is not None
            else retention.hold_call(str(call), not release, "system")
        )
    finally:
        store.close()
    what = f"user {user}" if user is not None else f"call {call}"
    if not found:
        raise fail(f"no {what}", code=1)
    typer.echo(f"{what}: legal hold {'released' if release else 'on'}")
