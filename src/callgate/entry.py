"""The `callgate` executable. `callgate detect` goes straight to `detect.command`: it needs neither
the configuration and storage layers nor typer (typer imports pydantic), whose imports would cost
more CPU time than reading a million-packet capture; `--help` and malformed options still go to
the typer command (`cli.detect.run_alone`), so they read exactly as before. Everything else is
`cli.app.main`. `callgate --version` alone is answered here too, before typer is imported (the same
line the typer option prints).
"""

from __future__ import annotations

import sys


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        from callgate import __version__

        print(f"callgate {__version__}")
        return 0
    if sys.argv[1:2] == ["detect"]:
        from callgate.detect import command

        code = command.main(sys.argv[2:])
        if code is not None:
            return code
        from callgate.cli.detect import run_alone  # --help, option errors: the typer command

        run_alone(sys.argv[2:])
        return 0
    from callgate.cli.app import main as full

    full()
    return 0


if __name__ == "__main__":
    sys.exit(main())
