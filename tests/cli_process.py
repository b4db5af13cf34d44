"""How tests run the `callgate` command: the venv's script (or, for the many commands of the
server and store tests, the same command in-process), in an environment without the developer's
CALLGATE_* settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "callgate"
COMMAND = (
    [str(BIN)]
    if BIN.exists()
    else [sys.executable, "-c", "from callgate.cli.app import main; main()"]
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CALLGATE_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGATE_")}
    env.update(extra)
    return env


def run_in_process(
    *args: str, cwd: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`callgate ARGS` run by the test's own process (typer's CliRunner, in `cwd`, with `env`
    and none of the developer's CALLGATE_* settings): what it prints and its exit status, without
    an interpreter start and the imports (~1 s CPU) of a `callgate` process per command. For the
    commands that talk to a server or a store; tests/integration/test_cli.py runs the installed
    command itself (its version, `turn` and `serve`: signals, ports, exit statuses)."""
    from typer.testing import CliRunner

    from callgate.cli.app import app

    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CALLGATE_")}
    environment.update(env)
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(
            app, list(args), input=stdin, env=environment, catch_exceptions=False
        )
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(
        ["callgate", *args], result.exit_code, result.stdout, result.stderr
    )
