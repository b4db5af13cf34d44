"""`callgate audit verify | checkpoint | list`: the hash-chained audit log, read from the store.

The signing key is `DATA_DIR/keys/audit-ed25519.pem` (created 0600 by the first `checkpoint`)
unless `--key FILE` names another; `verify` accepts a public-key PEM there too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from callgate.cli.common import (
    ConfigOpt,
    JsonOpt,
    StoreDirOpt,
    err,
    fail,
    open_settings_store,
    settings_from,
    table_console,
)

audit_app = typer.Typer(help="The tamper-evident audit log.")

PROGRESS_MIN = 10_000  # a progress bar from this many entries on

KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        metavar="FILE",
        help="Ed25519 key PEM (default DATA_DIR/keys/audit-ed25519.pem).",
        show_default=False,
    ),
]


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields the callback that moves it (entries done)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("verifying", total=total)
        yield lambda done: progress.update(task, completed=done)


@audit_app.command("verify")
def audit_verify(
    from_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--from-checkpoint",
            metavar="FILE",
            help="Also check the log against this exported checkpoint.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    key: KeyOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Recompute the chain and check every checkpoint; exit 1 naming the first bad entry."""
    from callgate.records.audit import AuditLog, load_public_key
    from callgate.runtime.audit import key_path as configured_key

    settings = settings_from(config, {"data_dir": data_dir})
    extra: list[str] = []
    if from_checkpoint is not None:
        try:
            extra.append(from_checkpoint.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"--from-checkpoint: {exc}") from None
    key_path = key or configured_key(settings)
    store = open_settings_store(settings)
    try:
        log = AuditLog(store)
        try:
            public = load_public_key(key_path) if key_path.exists() else None
        except ValueError as exc:
            raise fail(f"--key: {exc}") from None
        total = log.size()
        if total >= PROGRESS_MIN and not as_json and err.is_terminal:
            with _progress_bar(total) as progress:
                result = log.verify(public, extra, progress=progress)
        else:
            result = log.verify(public, extra)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(result.as_json()))
    elif result.ok:
        typer.echo(
            f"audit log intact: {result.size} entries, {result.checkpoints} signed checkpoint(s)"
        )
    else:
        where = f"entry {result.first_bad_seq}: " if result.first_bad_seq is not None else ""
        err.print(
            f"[bold red]audit log broken:[/] {escape(where + (result.problem or ''))}",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    export: Annotated[
        Path | None,
        typer.Option("--export", metavar="FILE", help="Also write the signed note to FILE."),
    ] = None,
    key: KeyOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Sign (size, head hash) of the log now, keep it, and print the signed note."""
    from callgate.records.audit import AuditLog, export_checkpoint, load_or_create_signing_key
    from callgate.runtime.audit import key_path as configured_key

    settings = settings_from(config, {"data_dir": data_dir})
    path = key or configured_key(settings)
    try:
        signing_key = load_or_create_signing_key(path)
    except (OSError, ValueError) as exc:
        raise fail(f"signing key: {exc}", code=1) from None
    store = open_settings_store(settings)
    try:
        checkpoint = AuditLog(store).checkpoint(signing_key)
    finally:
        store.close()
    if export is not None:
        try:
            export_checkpoint(checkpoint, export)
        except OSError as exc:
            raise fail(f"--export: {exc}", code=1) from None
    typer.echo(checkpoint.note, nl=False)


@audit_app.command("export-checkpoint")
def audit_export_checkpoint(
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write the note to FILE (default: stdout)."),
    ] = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The latest stored signed checkpoint (e.g. a running server's periodic one), for an
    external witness to keep; exit 1 when there is none."""
    from callgate.records.audit import AuditLog, export_checkpoint

    store = open_settings_store(settings_from(config, {"data_dir": data_dir}))
    try:
        stored = AuditLog(store).checkpoints()
    finally:
        store.close()
    if not stored:
        raise fail("no checkpoint yet (sign one with `callgate audit checkpoint`)", code=1)
    latest = stored[-1]
    if out is None:
        typer.echo(latest.note, nl=False)
        return
    try:
        export_checkpoint(latest, out)
    except OSError as exc:
        raise fail(f"--out: {exc}", code=1) from None
    typer.echo(f"checkpoint of {latest.size} entries written to {out}")


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The latest audit entries, newest first."""
    from callgate.records.audit import AuditLog

    store = open_settings_store(settings_from(config, {"data_dir": data_dir}))
    try:
        entries = AuditLog(store).recent(limit)
    finally:
        store.close()
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry.as_json(), ensure_ascii=False))
        return
    if not entries:
        typer.echo("no audit entries")
        return
    table = Table("seq", "time (UTC)", "actor", "action", "object", "details", box=None)
    for e in entries:
        when = e.at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(e.seq), when, e.actor, e.action, e.object, e.details)
    table_console().print(table)
