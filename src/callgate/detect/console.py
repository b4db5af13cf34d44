"""What `callgate detect` prints with, kept inside detect/ so the command depends on no CLI module:
the stderr console (warnings, errors, the progress bar) and the table console. rich is imported
only when something is printed (`callgate detect` starts without it on the usual path)."""

from __future__ import annotations

import sys
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def table_console() -> Console:
    """Tables to stdout: terminal width on a terminal, never squeezed or cut when piped."""
    from rich.console import Console

    return Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=4096)


def error(message: str) -> None:
    """`error: MESSAGE` on stderr (markup in the message is printed as text)."""
    from rich.markup import escape

    stderr().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    from rich.markup import escape

    stderr().print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
