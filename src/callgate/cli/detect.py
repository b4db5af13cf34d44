"""`callgate detect CAPTURE…`: find real-time voice/video traffic (calls) in packet captures.

Reads pcap/pcapng files (streaming; a progress bar on stderr for large files), reports per internal
host, application and peer (see docs/detection.md). Exit status: 0 report written, 1 a capture could
not be read, 2 bad options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from callgate.detect.command import Args, Failure, run

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
    try:
        run(Args(list(captures), internal or [], allow_relay or [], format, output))
    except Failure as exc:
        from callgate.cli.output import fail

        raise fail(exc.message, exc.code) from None


def run_alone(args: list[str]) -> None:
    """`callgate detect ARGS` as its own typer command, without loading the other commands
    (`callgate.entry`, for what `detect.command.parse_args` leaves to typer: --help, errors)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(detect_command)
    app(args=args, prog_name="callgate detect")
