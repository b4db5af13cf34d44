"""What `callgate detect` does, without the command-line framework: read the captures, print or
write the report. `cli_detect.py` wraps it in the typer command; `callgate.entry` calls it directly
for ordinary invocations (`parse_args`), because importing typer (which imports pydantic) and rich
costs more CPU time than reading a million packets. rich is imported only for what needs it: the
table, the progress bar, warnings and errors.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.html import to_html
from callgate.detect.pcapfile import CaptureError
from callgate.detect.render import TABLE_HEADERS, table_rows, to_csv, to_json
from callgate.detect.report import Report

FORMATS = ("table", "json", "csv", "html")
PROGRESS_MIN_BYTES = 16 * 1024 * 1024
_VALUED = {"--internal": "internal", "--allow-relay": "relays", "--format": "fmt",
           "--output": "output", "-o": "output"}  # fmt: skip


class Failure(Exception):
    """The command fails: `message` for the user, exit status `code` (1 input, 2 options)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(slots=True)
class Args:
    captures: list[Path] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)
    relays: list[str] = field(default_factory=list)
    fmt: str = "table"
    output: Path | None = None


def parse_args(args: list[str]) -> Args | None:
    """The plain forms of `detect`'s arguments (`--opt VALUE`, `--opt=VALUE`, captures); None for
    anything else (--help, unknown options, no capture), which the typer command then handles."""
    parsed = Args()
    rest = iter(args)
    for arg in rest:
        name, eq, value = arg.partition("=")
        key = _VALUED.get(name)
        if key is None:
            if arg.startswith("-"):
                return None
            parsed.captures.append(Path(arg))
            continue
        if eq and (name == "-o" or not value):  # click's own reading of these differs
            return None
        if not eq:
            following = next(rest, None)
            if following is None:
                return None
            value = following
        if key == "internal":
            parsed.internal.append(value)
        elif key == "relays":
            parsed.relays.append(value)
        elif key == "fmt":
            parsed.fmt = value
        else:
            parsed.output = Path(value)
    return parsed if parsed.captures else None


def main(args: list[str]) -> int | None:
    """Run `callgate detect ARGS`; its exit status, or None when `parse_args` declines."""
    parsed = parse_args(args)
    if parsed is None:
        return None
    try:
        run(parsed)
    except Failure as exc:
        from callgate.cli.output import fail

        fail(exc.message, exc.code)
        return exc.code
    return 0


def run(args: Args) -> None:
    if args.fmt not in FORMATS:
        raise Failure(f"--format: expected one of {', '.join(FORMATS)}, got {args.fmt!r}")
    try:
        detector = Detector(
            [parse_network(n) for n in args.internal], [parse_relay(r) for r in args.relays]
        )
    except ValueError as exc:
        raise Failure(str(exc)) from None
    for path in args.captures:
        try:
            with _progress(path) as advance:
                detector.read(path, advance)
        except CaptureError as exc:
            raise Failure(f"callgate detect: {exc}", code=1) from None
    report = detector.report()
    if report.warnings:
        from callgate.cli.output import err

        for warning in report.warnings:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    _write(report, args.fmt, args.output)


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
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from callgate.cli.output import err

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
        raise Failure(f"--output: cannot write {output}: {exc.strerror or exc}", 1) from None
    sys.stderr.write(f"report written to {output}\n")


def _print_table(report: Report) -> None:
    from rich.table import Table

    from callgate.cli.output import table_console

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
