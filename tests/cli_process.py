"""How tests run the installed `callgate` command: the venv's script, an environment without the
developer's CALLGATE_* settings."""

from __future__ import annotations

import os
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
