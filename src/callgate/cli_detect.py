"""`callgate detect CAPTURE…`: find real-time voice/video traffic (calls) in packet captures.

Reads pcap/pcapng files (streaming; a progress bar on stderr for large files), reports per internal
host, application and peer (see docs/detection.md). Exit status: 0 report written, 1 a capture could
not be read, 2 bad options.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from callgate.cli_common import err, fail, table_console
from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.html import to_html
from callgate.detect.pcapfile import CaptureError
from callgate.detect.render import TABLE_HEADERS, table_rows, to_csv, to_json
from callgate.detect.report import Report

FORMATS = ("table", "json", "csv", "html")
PROGRESS_MIN_BYTES = 16 * 1024 * 1024

CapturesArg = Annotated[
    list[Path], typer.Argument(metavar="CAPTURE...", help="pcap or pcapng files.")
]
InternalOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--internal", metavar="CIDR",
        help="Internal network; repeat (default: private, loopback and link-local ranges).",
    ),
]  # fmt: skip
RelayOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-relay", metavar="HOST:PORT",
        help="Sanctioned relay (our callgate/TURN server); repeat. Its traffic is reported as sanctioned.",
    ),
]  # fmt: skip
FormatOpt = Annotated[str, typer.Option("--format", help="table, json, csv or html.")]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write the report here.")
]


def detect_command(
    captures: CapturesArg,
    internal: InternalOpt = None,
    allow_relay: RelayOpt = None,
    format: FormatOpt = "table",
    output: OutputOpt = None,
) -> None:
    """Find real-time voice/video (calls) in packet captures, per internal host and application."""
    if format not in FORMATS:
        raise fail(f"--format: expected one of {', '.join(FORMATS)}, got {format!r}")
    try:
        detector = Detector(
            [parse_network(n) for n in internal or []], [parse_relay(r) for r in allow_relay or []]
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    for path in captures:
        try:
            with _progress(path) as advance:
                detector.read(path, advance)
        except CaptureError as exc:
            raise fail(f"callgate detect: {exc}", code=1) from None
    report = detector.report()
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    _write(report, format, output)


@contextlib.contextmanager
def _progress(path: Path) -> Iterator[Callable[[int], None] | None]:
    """A bytes-read / file-size bar on stderr for files large enough to wait for."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(path.name, total=size)
        yield lambda n: bar.advance(task, n)


def _write(report: Report, fmt: str, output: Path | None) -> None:
    if fmt == "table" and output is None:
        _print_table(report)
        return
    text = {"json": to_json, "csv": to_csv, "html": to_html}.get(fmt, to_json)(report)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"--output: cannot write {output}: {exc.strerror or exc}", code=1) from None
    err.print(f"report written to {output}", highlight=False, soft_wrap=True)


def _print_table(report: Report) -> None:
    console = table_console()
    summary = report.summary()
    table = Table(*TABLE_HEADERS, box=None)
    for row in table_rows(report):
        table.add_row(*row)
    if report.sessions:
        console.print(table)
    hosts = summary["hosts_with_unsanctioned_rtc"]
    console.print(
        f"\n{summary['packets']} packets, {summary['flows']} flows, {summary['rtc_flows']} real-time; "
        f"{summary['unsanctioned_sessions']} unsanctioned session(s)"
        + (f" on {', '.join(hosts)}" if isinstance(hosts, list) and hosts else "")
        + f", {summary['sanctioned_sessions']} through allow-listed relays.",
        highlight=False,
    )
