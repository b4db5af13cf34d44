"""What every `callgate` command prints with: the stderr console, the error exit, the table
console. Kept free of the configuration and storage imports so that `callgate detect` starts
fast (see `callgate.entry`)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def table_console() -> Console:
    """Tables to stdout: terminal width on a terminal, never squeezed or cut when piped."""
    return Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=4096)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
