"""What `callgate detect` does, without the command-line framework: read the captures, print or
write the report. `callgate.cli.detect` wraps it in the typer command; `callgate.entry` calls it directly
for ordinary invocations (`parse_args`), because importing typer (which imports pydantic) and rich
costs more CPU time than reading a million packets. rich is imported only for what needs it: the
table, the progress bar, warnings and errors.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from callgate.detect import console
from callgate.detect.capture import CaptureError
from callgate.detect.engine import Detector, parse_network, parse_relay
from callgate.detect.ranges import RangeError, load_ranges
from callgate.detect.report import Report

FORMATS = ("table", "json", "csv", "html", "nftables")
PROGRESS_MIN_BYTES = 16 * 1024 * 1024
_VALUED = {"--internal": "internal", "--allow-relay": "relays", "--format": "fmt",
           "--output": "output", "-o": "output", "--lists": "lists",
           "--idle-timeout": "idle"}  # fmt: skip


class Failure(Exception):
    """The command fails: `message` for the user, exit status `code` (1 input, 2 options)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Args:
    """`detect`'s arguments (a plain class, as the rest of detect's start-up path: see
    `flow.Flow`)."""

    FIELDS = ("captures", "internal", "relays", "fmt", "output", "lists", "idle")  # in order
    __slots__ = FIELDS

    def __init__(
        self, captures: list[Path] | None = None, internal: list[str] | None = None,
        relays: list[str] | None = None, fmt: str = "table", output: Path | None = None,
        lists: Path | None = None, idle: str | None = None,
    ) -> None:  # fmt: skip
        self.captures: list[Path] = captures if captures is not None else []
        self.internal: list[str] = internal if internal is not None else []
        self.relays: list[str] = relays if relays is not None else []
        self.fmt = fmt
        self.output = output
        self.lists = lists  # vendor address ranges replacing the shipped ones
        self.idle = idle  # seconds after which an idle flow is closed (0: never)

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Args) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Args({', '.join(map(repr, self._fields()))})"


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
        elif key == "lists":
            parsed.lists = Path(value)
        elif key == "idle":
            parsed.idle = value
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
        console.error(exc.message)
        return exc.code
    return 0


def run(args: Args) -> None:
    """Read the captures, write the report. Python's cyclic garbage collector is paused meanwhile:
    a run allocates hundreds of thousands of objects that live until its end (flows, their
    evidence, the report) and makes no reference cycles, so the collector's repeated passes over
    them freed nothing and cost ≈ 12 % of a large capture's CPU time (bench/detect_vs_ndpi.py);
    reference counting still frees everything as before."""
    paused = gc.isenabled()
    gc.disable()
    try:
        _run(args)
    finally:
        if paused:
            gc.enable()


def _run(args: Args) -> None:
    if args.fmt not in FORMATS:
        raise Failure(f"--format: expected one of {', '.join(FORMATS)}, got {args.fmt!r}")
    try:
        detector = Detector(
            [parse_network(n) for n in args.internal], [parse_relay(r) for r in args.relays]
        )
    except ValueError as exc:
        raise Failure(str(exc)) from None
    if args.idle is not None:
        detector.flows.idle = _idle(args.idle)
    if args.lists is not None:
        try:
            detector.ranges = load_ranges(args.lists)
        except RangeError as exc:
            raise Failure(str(exc), code=1) from None
    for path in args.captures:
        try:
            with _progress(path) as advance:
                detector.read(path, advance)
        except CaptureError as exc:
            raise Failure(f"callgate detect: {exc}", code=1) from None
    report = detector.report()
    for warning in report.warnings:
        console.warning(warning)
    if args.fmt == "nftables":
        from callgate.detect.nftables import to_nftables

        allowed = [ipaddress.ip_address(relay.ip) for relay in detector.relays]
        _emit(to_nftables(report, allowed, lambda a: detector.is_internal(a.packed)), args.output)
        return
    _write(report, args.fmt, args.output)


def _idle(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400 * 365:
        raise Failure(f"--idle-timeout: expected seconds (0 = never), got {text!r}")
    return seconds


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

    columns = ("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console.stderr(), transient=True) as bar:
        task = bar.add_task(path.name, total=size)
        yield lambda n: bar.advance(task, n)


def _write(report: Report, fmt: str, output: Path | None) -> None:
    if fmt == "table" and output is None:
        _print_table(report)
        return
    # each renderer is imported when asked for (csv, html: start-up time of every run)
    if fmt == "html":
        from callgate.detect.html import to_html

        _emit(to_html(report), output)
        return
    from callgate.detect.render import to_csv, to_json

    _emit((to_csv if fmt == "csv" else to_json)(report), output)


def _emit(text: str, output: Path | None) -> None:
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

    from callgate.detect.render import TABLE_HEADERS, table_rows

    out = console.table_console()
    summary = report.summary()
    table = Table(*TABLE_HEADERS, box=None)
    for row in table_rows(report):
        table.add_row(*row)
    if report.sessions:
        out.print(table)
    hosts = summary["hosts_with_unsanctioned_rtc"]
    out.print(
        f"\n{summary['packets']} packets, {summary['flows']} flows, {summary['rtc_flows']} real-time; "
        f"{summary['unsanctioned_sessions']} unsanctioned session(s)"
        + (f" on {', '.join(hosts)}" if isinstance(hosts, list) and hosts else "")
        + f", {summary['sanctioned_sessions']} through allow-listed relays.",
        highlight=False,
    )
