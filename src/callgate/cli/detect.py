"""`callgate detect CAPTURE…`: find real-time voice/video traffic (calls) in packet captures.

Reads pcap/pcapng files (streaming; a progress bar on stderr for large files), reports per internal
host, application and peer (see docs/detection.md). Exit status: 0 report written, 1 a capture could
not be read, 2 bad options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
FormatOpt = Annotated[
    str, typer.Option("--format", help="table, json, csv, html or nftables (a blocking ruleset).")
]
ListsOpt = Annotated[
    Path | None,
    typer.Option("--lists", metavar="FILE",
                 help="Vendor address ranges replacing the shipped ones (see docs/detection.md)."),
]  # fmt: skip
IdleOpt = Annotated[
    str | None,
    typer.Option("--idle-timeout", metavar="SECONDS",
                 help="Close a flow idle this long; its 5-tuple then starts a new flow (default 180, 0 = never)."),
]  # fmt: skip
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write the report here.")
]


def detect_command(
    captures: CapturesArg,
    internal: InternalOpt = None,
    allow_relay: RelayOpt = None,
    format: FormatOpt = "table",
    output: OutputOpt = None,
    lists: ListsOpt = None,
    idle_timeout: IdleOpt = None,
) -> None:
    """Find real-time voice/video (calls) in packet captures, per internal host and application."""
    from callgate.detect.command import Args, Failure, run  # numpy and the engine: only here

    try:
        run(
            Args(
                list(captures),
                internal or [],
                allow_relay or [],
                format,
                output,
                lists,
                idle_timeout,
            )
        )
    except Failure as exc:
        from callgate.cli.output import fail

        raise fail(exc.message, exc.code) from None


def monitor_command(
    interface: Annotated[str, typer.Option("--interface", metavar="IFACE",
                                           help="Network interface to watch (needs root).")],
    internal: InternalOpt = None,
    allow_relay: RelayOpt = None,
    interval: Annotated[float, typer.Option(help="Seconds between updates.")] = 1.0,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: run until Ctrl-C).")] = 0.0,
    max_flows: Annotated[int, typer.Option(help="Flow table size; the least recently active flows are evicted.")] = 100_000,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", metavar="SECONDS",
                                                help="Close a flow idle this long (0 = never).")] = 180.0,
    lists: ListsOpt = None,
) -> None:  # fmt: skip
    """Watch a live interface for real-time voice/video; one JSON line per new or updated session."""
    import sys

    from callgate.detect.capture.packets import CaptureError
    from callgate.detect.live.monitor import MonitorArgs, monitor
    from callgate.detect.live.ring import RingError

    args = MonitorArgs(interface, internal or [], allow_relay or [], interval, duration, max_flows,
                       idle_timeout, lists)  # fmt: skip
    try:
        monitor(args, sys.stdout)
    except (ValueError, RingError) as exc:  # RangeError (a bad --lists) is a ValueError: status 1
        from callgate.cli.output import fail

        code = 1 if isinstance(exc, (RingError, CaptureError)) else 2
        raise fail(str(exc), code) from None


def run_alone(args: list[str]) -> None:
    """`callgate detect ARGS` as its own typer command, without loading the other commands
    (`callgate.entry`, for what `detect.command.parse_args` leaves to typer: --help, errors)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(detect_command)
    app(args=args, prog_name="callgate detect")
