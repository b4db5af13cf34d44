"""`callgate recording list | show | export | verify`: compliance recordings.

`list`, `show` and `export` read the server's store (`--data-dir` / `--config`; `export` needs the
recording master key and the audit signing key there) or, with `--server`, its API as a
compliance officer or admin. `verify DIR` needs only the bundle.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import typer
from rich.markup import escape
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
    err,
    fail,
    open_settings_store,
    settings_from,
    table_console,
)
from callgate.cli.times import time_option

recording_app = typer.Typer(help="Compliance recordings: list, show, export, verify.")


def _find(repository: object, target: str) -> object:
    from callgate.recording.store import RecordingRepository

    assert isinstance(repository, RecordingRepository)
    row = repository.get(target)
    if row is None:
        rows = repository.for_call(target)
        row = rows[-1] if rows else None
    if row is None:
        raise fail(f"no recording for {target!r} (a recording id or a call id)", code=1)
    return row


def _via_api(
    server: str, user: str | None, password_stdin: bool, path: str
) -> list[dict[str, Any]]:
    """GET `path` of the recordings API as a compliance officer or admin."""
    with admin_api(server, user, admin_password(user, password_stdin)) as api:
        found = api.call("GET", path)
    if isinstance(found, dict) and "items" in found:  # a listing page, newest first
        return list(found["items"])
    return [found]


def _filters(party: str | None, since: str | None, until: str | None,
             held: bool | None) -> dict[str, Any]:  # fmt: skip
    """The search filters given (recording/search.py), checked as the API checks them."""
    given: dict[str, Any] = {"party": party, "since": time_option("--since", since),
                             "until": time_option("--until", until), "held": held}  # fmt: skip
    if given["since"] and given["until"] and given["since"] >= given["until"]:
        raise fail("--since must be before --until")
    return {k: v for k, v in given.items() if v is not None}


def _rows(
    server: str | None, user: str | None, password_stdin: bool,
    data_dir: Path | None, config: Path | None, *, limit: int, target: str | None = None,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Recordings as JSON: through the API with --server, else from the store."""
    from callgate.accounts.handles import normal_handle
    from callgate.recording.search import RecordingFilter, search
    from callgate.recording.store import RecordingRepository, RecordingRow

    filters = filters or {}
    url = api_server(server, data_dir=data_dir, config=config)
    if url is not None:
        wire = {k: (v.isoformat() if isinstance(v, datetime) else str(v).lower()
                    if isinstance(v, bool) else v) for k, v in filters.items()}  # fmt: skip
        query = {"limit": limit, **({"call_id": target} if target else {}), **wire}
        rows = _via_api(url, user, password_stdin, f"/api/recordings?{urlencode(query)}")
        if target and not rows and re.fullmatch("[0-9a-f]{32}", target):
            rows = _via_api(url, user, password_stdin, f"/api/recordings/{target}")
        return rows
    store = open_settings_store(settings_from(config, {"data_dir": data_dir}))
    try:
        repository = RecordingRepository(store)
        if target is None:
            party = filters.get("party")
            where = RecordingFilter(**{**filters, "party": party and normal_handle(party)})
            return [r.as_json() for r in search(repository.engine, where, limit, None).rows]
        row = _find(repository, target)
        assert isinstance(row, RecordingRow)
        return [row.as_json()]
    finally:
        store.close()


@recording_app.command("list")
def recording_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    party: Annotated[
        str | None, typer.Option("--party", help="Caller or callee: a handle or a number.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Started at or after: ISO 8601 (UTC), or -30m / -1h / -2d."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Started before: ISO 8601 (UTC), or -30m / -1h / -2d."),
    ] = None,
    held: Annotated[
        bool | None, typer.Option("--held/--not-held", help="Kept by a legal hold, or not.")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """The most recent recordings, newest first; --party, --since, --until, --held narrow them."""
    filters = _filters(party, since, until, held)
    rows = _rows(server, user, password_stdin, data_dir, config, limit=limit, filters=filters)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("recording", "call", "state", "started", "ended", "bytes", "kept until", "hold",
                  "archived")  # fmt: skip
    for r in rows:
        table.add_row(
            r["recording_id"], r["call_id"], r["state"], r["started_at"], r["ended_at"] or "-",
            str(r["bytes"]), (r.get("retain_until") or "-")[:10],
            "yes" if r.get("legal_hold") else "-", "yes" if r.get("archive") else "-",
        )  # fmt: skip
    table_console().print(table)


@recording_app.command("show")
def recording_show(
    target: Annotated[str, typer.Argument(help="Recording id or call id.")],
    as_json: JsonOpt = False,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """One recording: state, digest, metadata (participants, streams, chunks)."""
    rows = _rows(server, user, password_stdin, data_dir, config, limit=1, target=target)
    if not rows:
        raise fail(f"no recording for {target!r} (a recording id or a call id)", code=1)
    data = rows[0]
    if as_json:
        typer.echo(json.dumps(data))
        return
    for name, value in data.items():
        if name != "metadata":
            typer.echo(f"{name}: {value}")
    metadata = data.get("metadata") or {}
    for party in metadata.get("participants", []):
        typer.echo(f"participant {party.get('id')}: {party.get('handle')}")
    for stream in metadata.get("streams", []):
        typer.echo(f"stream {stream['label']}: {stream['packets']} packets, {stream['channel']}")


@recording_app.command("export")
def recording_export(
    target: Annotated[str, typer.Argument(help="Call id or recording id.")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="New directory to write.")],
    audio_format: Annotated[
        Literal["wav", "ogg"], typer.Option("--format", help="Audio as wav or ogg (Ogg/Opus).")
    ] = "wav",
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    user: AdminOpt = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Write a bundle (audio caller-left/callee-right, metadata, audit entries, signed
    checkpoint) that `callgate recording verify DIR` checks offline. The export is audited."""
    if out.exists():
        raise fail(f"--out: {out} exists", code=2)
    url = api_server(server, data_dir=data_dir, config=config)
    if url is not None:
        _export_via_api(url, user, password_stdin, target, out, audio_format)
        return
    from callgate.recording.bundle import BundleError, export_bundle
    from callgate.recording.chunks import ChunkError
    from callgate.recording.keys import MasterKeyError, load_master_key
    from callgate.recording.service import recording_settings
    from callgate.recording.store import RecordingRepository, RecordingRow
    from callgate.records.audit import AuditLog, load_or_create_signing_key
    from callgate.runtime.audit import key_path

    settings = settings_from(config, {"data_dir": data_dir})
    paths = recording_settings(settings.recording, settings.data_dir)
    try:
        master = load_master_key(paths.key_file, create=False)
        signing_key = load_or_create_signing_key(key_path(settings))
    except (MasterKeyError, OSError, ValueError) as exc:
        raise fail(str(exc), code=1) from None
    store = open_settings_store(settings)
    try:
        row = _find(RecordingRepository(store), target)
        assert isinstance(row, RecordingRow)
        done = export_bundle(row, paths.directory, master, AuditLog(store), signing_key, out,
                             "cli", audio_format)  # fmt: skip
    except (BundleError, ChunkError, MasterKeyError, OSError) as exc:
        raise fail(f"export: {exc}", code=1) from None
    finally:
        store.close()
    typer.echo(
        f"exported recording {done['recording_id']} ({done['seconds']:.1f} s) to {out}; "
        f"audit entry {done['export_entry']}{_placement(done)}"
    )


def _placement(facts: dict[str, Any]) -> str:
    """What the export did not place by RTP timestamp (from its audited entry): the legs it
    re-anchored on arrival time (their timestamps jumped) and the decoded pieces it left out."""
    said = ""
    if reanchors := _per_leg(facts.get("reanchors"), "x"):
        said += f"; re-anchored on arrival time (RTP timestamps jumped): {reanchors}"
    if dropped := _per_leg(facts.get("dropped"), " piece(s)"):
        said += f"; decoded audio left out (too late for the held window): {dropped}"
    return said


def _per_leg(counts: Any, unit: str) -> str:
    if not isinstance(counts, dict):  # an export older than the count
        return ""
    return ", ".join(f"{leg} {count}{unit}" for leg, count in sorted(counts.items()) if count)


def _export_via_api(
    url: str, user: str | None, password_stdin: bool, target: str, out: Path, audio: str
) -> None:
    """GET the bundle as a tar from the server (audited there as the reader) and unpack it."""
    import tempfile

    from callgate.recording.bundle_tar import BundleTarError, unpack

    if not re.fullmatch("[0-9a-f]{32}", target):
        raise fail(f"not a recording or call id: {target!r}")
    with admin_api(url, user, admin_password(user, password_stdin)) as api:
        of_call = api.call("GET", f"/api/recordings?{urlencode({'call_id': target})}")
        listed = of_call["items"]  # newest first
        recording_id = listed[0]["recording_id"] if listed else target
        with tempfile.TemporaryDirectory(prefix="callgate-export-") as work:
            tar = Path(work) / "bundle.tar"
            with tar.open("wb") as handle:
                api.download(f"/api/recordings/{recording_id}/bundle?format={audio}", handle)
            try:
                unpack(tar, out)
            except BundleTarError as exc:
                raise fail(f"export from {url}: {exc}", code=1) from None
    export = _export_entry(out)
    typer.echo(
        f"exported recording {recording_id} ({export['details']['seconds']:.1f} s) from {url} "
        f"to {out}; audit entry {export['seq']}{_placement(export['details'])}"
    )


def _export_entry(bundle: Path) -> dict[str, Any]:
    """The bundle's own `recording.exported` entry (its last)."""
    lines = (bundle / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    entry: dict[str, Any] = json.loads(lines[-1])
    entry["details"] = json.loads(entry["details"])
    return entry


@recording_app.command("verify")
def recording_verify(
    bundle: Annotated[Path, typer.Argument(help="A directory written by `recording export`.")],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", metavar="FILE", help="Audit public key to trust (default: the bundle's)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a bundle offline; exit 1 naming what does not match (e.g. the altered chunk)."""
    from callgate.recording.bundle import verify_bundle

    verdict = verify_bundle(bundle, key)
    if as_json:
        typer.echo(json.dumps({"ok": verdict.ok, "problems": verdict.problems, **verdict.facts}))
    elif verdict.ok:
        facts = verdict.facts
        typer.echo(
            f"OK: recording {facts.get('recording_id')} ({facts.get('state')}), "
            f"{facts.get('chunks')} chunks intact, audit entries {facts.get('audit_entries')} "
            f"covered by a valid signed checkpoint{_placement(facts)}"
        )
    else:
        for problem in verdict.problems:
            typer.echo(f"FAILED: {problem}")
        err.print(f"[bold red]bundle {escape(str(bundle))} does not verify[/]")
    raise typer.Exit(0 if verdict.ok else 1)
