"""Pieces every `callgate` sub-command shares: error exit, settings loading, store opening, the
password rule (stdin or CALLGATE_PASSWORD; a prompt only on a terminal)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from callgate.config import Settings, load_settings
from callgate.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from callgate.storage.db import Store

PASSWORD_ENV = "CALLGATE_PASSWORD"  # noqa: S105 - the variable's name, not a password
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (env CALLGATE_CONFIG).", show_default=False),
]
StoreDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", metavar="DIR", help="Data directory (default ./data).")
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def table_console() -> Console:
    """Tables to stdout: terminal width on a terminal, never squeezed or cut when piped."""
    return Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=4096)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_from(config: Path | None, overrides: dict[str, Any]) -> Settings:
    try:
        return load_settings(config, overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def open_settings_store(settings: Settings) -> Store:
    """The store of `settings` (its database URL or data dir), migrated; exit 1 when it fails."""
    from callgate.storage.db import open_store

    try:
        return open_store(settings.database())
    except StorageError as exc:
        raise fail(str(exc), code=1) from None


def read_password(from_stdin: bool) -> str:
    """--password-stdin, else CALLGATE_PASSWORD, else (only on a terminal) a prompt."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise fail(f"give the password with --password-stdin or {PASSWORD_ENV}")
    if not password:
        raise fail("the password is empty")
    return password
