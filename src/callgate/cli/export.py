"""`callgate cdr export` and `callgate audit export` (registered in app.py): streamed CSV / JSON Lines exports read
directly from the store of `--data-dir`, with a progress bar on stderr; each export is audited
(actor "system", details with `via: cli` and the OS user) exactly as the API's are. With
`--server URL` (or CALLGATE_SERVER) they stream the API's export instead (GET /api/cdrs/export,
/api/audit/export, as an admin or compliance officer), audited by the server as that user."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlencode

import typer

from callgate.cli.common import (
    ConfigOpt,
    ReaderOpt,
    ServerOpt,
    StoreDirOpt,
    admin_api,
    admin_password,
    api_server,
    err,
    open_settings_store,
    store_settings,
)
from callgate.cli.times import time_option

if TYPE_CHECKING:
    from callgate.storage.db import Store

FormatOpt = Annotated[
    Literal["csv", "jsonl"], typer.Option("--format", help="csv or jsonl (JSON Lines).")
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", metavar="FILE", help="Write here (default: stdout)."),
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="ISO 8601 time, or -30m / -1h / -2d (inclusive).")
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="ISO 8601 time, or -30m / -1h / -2d (exclusive).")
]


@contextmanager
def _output(path: Path | None) -> Iterator[IO[bytes]]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with path.open("wb") as handle:
        yield handle


def _write(chunks: Iterator[bytes], counted: Any, total: int, out: IO[bytes]) -> None:
    """Write the chunks with a rich progress bar (rows done of `total`) on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=total < 1000) as progress:
        task = progress.add_task("exporting", total=total)
        for chunk in chunks:
            out.write(chunk)
            progress.update(task, completed=counted.count)


def _through_api(
    url: str, admin: str | None, path: str, query: dict[str, Any], output: Path | None
) -> None:
    """Stream the server's export of `path` with `query` (None values left out) to `output`."""
    given = {k: v.isoformat() if hasattr(v, "isoformat") else str(v).lower() if isinstance(v, bool)
             else str(v) for k, v in query.items() if v is not None}  # fmt: skip
    with admin_api(url, admin, admin_password(admin)) as api, _output(output) as out:
        written = api.download(f"{path}?{urlencode(given)}", out)
    err.print(f"exported {written} bytes from {url}", highlight=False)


def _export(
    store: Store, kind: Literal["cdr", "audit"], where: Any, fmt: Any, out: IO[bytes]
) -> int:
    from callgate.records.audit import AuditLog
    from callgate.records.export import (
        Counted,
        audited_export,
        cdr_export_chunks,
        render_audit,
        render_cdrs,
    )
    from callgate.records.query import RecordsQuery

    query = RecordsQuery(store.engine)
    total = query.count_cdrs(where) if kind == "cdr" else query.count_audit(where)
    rows: Iterator[Any] = (
        cdr_export_chunks(store.engine, where) if kind == "cdr" else query.iter_audit(where)
    )
    details = {
        "object": "cdrs" if kind == "cdr" else "audit",
        "format": fmt,
        "filter": where.as_json(),
        "via": "cli",
        "os_user": getpass.getuser(),
    }
    counter: list[Counted] = []

    def chunks(counted: Counted) -> Iterator[bytes]:
        counter.append(counted)
        return render_cdrs(counted, fmt) if kind == "cdr" else render_audit(counted, fmt)

    log = AuditLog(store)
    stream = audited_export(
        log, "system", f"export.{kind}", details, chunks, rows, chunked=kind == "cdr"
    )
    first = next(stream, b"")  # runs `chunks`, so the counter exists
    out.write(first)
    _write(stream, counter[0], total, out)
    return counter[0].count


def _export_store(
    command: str,
    config: Path | None,
    data_dir: Path | None,
    kind: Literal["cdr", "audit"],
    where: Any,
    fmt: Any,
    output: Path | None,
) -> int:
    """Export from the local store of `command`'s settings to `output`; the rows written."""
    store = open_settings_store(store_settings(command, config, {"data_dir": data_dir}))
    try:
        with _output(output) as out:
            return _export(store, kind, where, fmt, out)
    finally:
        store.close()


def cdr_export(
    fmt: FormatOpt = "csv",
    output: OutputOpt = None,
    party: Annotated[
        str | None, typer.Option("--party", help="Calls this handle made or received.")
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    disposition: Annotated[str | None, typer.Option("--disposition")] = None,
    poor: Annotated[
        bool | None,
        typer.Option("--poor/--not-poor", help="Only calls with (without) a poor stream."),
    ] = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    admin: ReaderOpt = None,
) -> None:
    """Export call records (newest first), streamed; audited as export.cdr."""
    from callgate.records.query import CdrFilter

    since_at, until_at = time_option("--since", since), time_option("--until", until)
    where = CdrFilter(party, since_at, until_at, disposition, poor)
    url = api_server(server, data_dir=data_dir, config=config)
    if url is not None:
        query = {"format": fmt, "party": party, "since": where.since, "until": where.until,
                 "disposition": disposition, "poor": poor}  # fmt: skip
        _through_api(url, admin, "/api/cdrs/export", query, output)
        return
    count = _export_store("cdr export", config, data_dir, "cdr", where, fmt, output)
    err.print(f"exported {count} call records", highlight=False)


def audit_export(
    fmt: FormatOpt = "jsonl",
    output: OutputOpt = None,
    after_seq: Annotated[int | None, typer.Option("--after-seq", min=0, max=2**63 - 1)] = None,
    actor: Annotated[str | None, typer.Option("--actor")] = None,
    action: Annotated[str | None, typer.Option("--action")] = None,
    object_: Annotated[str | None, typer.Option("--object")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    data_dir: StoreDirOpt = None,
    config: ConfigOpt = None,
    server: ServerOpt = None,
    admin: ReaderOpt = None,
) -> None:
    """Export audit entries in chain order with their hashes, streamed; audited as
    export.audit."""
    from callgate.records.query import AuditFilter

    since_at, until_at = time_option("--since", since), time_option("--until", until)
    where = AuditFilter(after_seq, actor, action, object_, since_at, until_at)
    url = api_server(server, data_dir=data_dir, config=config)
    if url is not None:
        query = {"format": fmt, "after_seq": after_seq, "actor": actor, "action": action,
                 "object": object_, "since": where.since, "until": where.until}  # fmt: skip
        _through_api(url, admin, "/api/audit/export", query, output)
        return
    count = _export_store("audit export", config, data_dir, "audit", where, fmt, output)
    err.print(f"exported {count} audit entries", highlight=False)
