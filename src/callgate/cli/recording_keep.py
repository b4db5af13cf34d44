"""`callgate recording hold | purge | archive`: legal hold and the retention purge of recordings
(recording/retention.py), on the store of `--data-dir` (audited as "cli:<OS user>") or, with
`--server`, through the API as a compliance officer (hold) or admin/compliance officer (purge);
and the WORM copy to S3 with Object Lock (recording/archive.py), on the store only (it reads the
files). Registered on the `recording` command group by `register`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

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
    settings_from,
)


def _local_retention(data_dir: Path | None, config: Path | None) -> Any:
    """(store, RecordingRetention, RecordingArchive or None) on the store of --data-dir /
    --config; the archive when `[recording.archive]` names a bucket."""
    from callgate.recording.archive import ArchiveTarget, RecordingArchive
    from callgate.recording.retention import RecordingRetention
    from callgate.recording.service import recording_settings
    from callgate.recording.store import RecordingRepository

    settings = settings_from(config, {"data_dir": data_dir})
    paths = recording_settings(settings.recording, settings.data_dir)
    target = ArchiveTarget.of(settings.recording.archive)
    store = open_settings_store(settings)
    repository = RecordingRepository(store)
    archive = RecordingArchive(target, repository, paths.directory) if target else None
    return store, RecordingRetention(repository, paths.directory), archive


def recording_hold(
    target: Annotated[str, typer.Argument(help="Recording id or call id.")],
    reason: Annotated[
        str | None, typer.Option("--reason", help="The matter or case (required to hold).")
    ] = None,
    release: Annotated[bool, typer.Option("--release", help="Lift the hold.")] = False,
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Put a recording on legal hold (kept past its retention until released), or --release it."""
    from callgate.accounts.audit import cli_actor
    from callgate.recording.retention import HoldError

    url = api_server(server, data_dir=data_dir, config=config)
    if url is not None:
        with admin_api(url, user, admin_password(user, password_stdin)) as api:
            if not re.fullmatch("[0-9a-f]{32}", target):
                raise fail(f"not a recording or call id: {target!r}")
            of_call = api.call("GET", f"/api/recordings?call_id={target}&limit=1")
            listed = of_call["items"]  # newest first
            recording_id = listed[0]["recording_id"] if listed else target
            body = {"hold": not release, "reason": reason}
            row = api.call("PUT", f"/api/recordings/{recording_id}/legal-hold", body)
    else:
        store, retention, _ = _local_retention(data_dir, config)
        try:
            found = retention.find(target)
            if found is None:
                raise fail(f"no recording for {target!r} (a recording id or a call id)", code=1)
            held = retention.hold(found.recording_id, not release, reason, cli_actor())
            row = held.as_json() if held is not None else None
        except HoldError as exc:
            raise fail(str(exc)) from None
        finally:
            store.close()
    if row is None:
        raise fail(f"no recording {target!r}", code=1)
    if as_json:
        typer.echo(json.dumps(row))
        return
    state = f"on legal hold ({row['hold_reason']})" if row["legal_hold"] else "not on legal hold"
    typer.echo(f"recording {row['recording_id']}: {state}; retained until {row['retain_until']}")


def recording_purge(
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Delete the recordings past their retention that no legal hold keeps (each audited as
    `recording.purged`). Nothing else ever deletes a recording."""
    from callgate.accounts.audit import cli_actor

    url = api_server(server, data_dir=data_dir, config=config)
    if url is not None:
        with admin_api(url, user, admin_password(user, password_stdin)) as api:
            result = api.call("POST", "/api/recordings/purge")
    else:
        store, retention, archive = _local_retention(data_dir, config)
        try:
            done = retention.purge(cli_actor(), None, archive.delete if archive else None)
        finally:
            store.close()
        result = {"deleted": done.deleted, "held_kept": done.held_kept, "refused": done.refused}
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"deleted {len(result['deleted'])} recordings past retention; "
        f"kept {result['held_kept']} on legal hold"
    )
    for recording_id, why in result["refused"].items():
        typer.echo(f"kept {recording_id}: {why}")


def recording_archive(
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100_000, help="At most this many recordings.")
    ] = 1000,
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Copy closed recordings not yet archived to the `[recording.archive]` S3 bucket, locked in
    compliance mode until their retention ends (each audited as `recording.archived`), and set
    or lift the S3 legal hold of archived recordings whose legal hold changed
    (`recording.archive_hold`). Exit 1 when one could not be archived or mirrored."""
    from callgate.accounts.audit import cli_actor
    from callgate.recording.archive import ArchiveError

    store, _, archive = _local_retention(data_dir, config)
    try:
        if archive is None:
            raise fail("no archive: set [recording.archive] bucket (docs/recording.md)", code=2)
        try:
            run = archive.archive(cli_actor(), limit)
        except ArchiveError as exc:
            raise fail(str(exc), code=1) from None
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"archived": run.archived, "failed": run.failed, "holds": run.holds}))
    else:
        typer.echo(
            f"archived {len(run.archived)} recordings to bucket {archive.target.bucket} "
            "(compliance mode until each one's retention ends)"
        )
        for recording_id, hold in run.holds.items():
            typer.echo(f"S3 legal hold {'set on' if hold else 'lifted from'} {recording_id}")
        for recording_id, why in run.failed.items():
            typer.echo(f"not archived {recording_id}: {why}")
    if run.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("hold")(recording_hold)
    app.command("purge")(recording_purge)
    app.command("archive")(recording_archive)
