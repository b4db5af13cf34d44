"""`callgate --version`, `--help` and a sub-command's `--help` load only the command line: the
store (SQLAlchemy), the settings (pydantic-settings), the accounts (argon2), the web app and the
media stack are imported by the commands that use them, when they run (every `callgate` process
paid ~0.8 s of CPU for them); `serve` imports Redis, LDAP, the SIP call handlers and numpy
only when configured or used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "pydantic_settings", "fastapi", "aiortc", "av", "numpy", "argon2")
OURS = ("callgate.config", "callgate.storage", "callgate.accounts", "callgate.runtime")

RUN = """
import contextlib, io, json, sys
from callgate.entry import main
shown = []
for argv in (["--version"], ["--version", "user"], ["--help"], ["user", "list", "--help"],
             ["call", "--help"]):
    sys.argv = ["callgate", *argv]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main()
    shown.append(out.getvalue())
print(json.dumps({"shown": shown, "loaded": sorted(m for m in sys.modules if "." not in m
    or m.startswith("callgate."))}))
"""


def test_version_and_help_import_no_heavy_module() -> None:
    ran = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, timeout=120,
                         check=True)  # fmt: skip
    result = json.loads(ran.stdout)
    version, typer_version, root_help, user_list_help, call_help = result["shown"]
    assert version.startswith("callgate ")
    assert typer_version == version  # the early answer and the typer option print the same line
    assert "user" in root_help and "serve" in root_help and "call" in root_help
    assert "--data-dir" in user_list_help and "--server" in user_list_help
    assert "--server" in call_help
    loaded = set(result["loaded"])
    assert "typer" in loaded  # the help really came from the typer commands
    assert sorted(loaded & {*HEAVY, *OURS}) == []


SERVE_ONLY_WHEN_USED = ("redis", "ldap3", "numpy", "callgate.runtime.sip_calls")


def test_serve_loads_optional_parts_only_when_configured() -> None:
    """What every `callgate serve` imports (callgate.runtime) leaves out Redis (a cluster's),
    ldap3 ([identity.ldap]), the phones' call handlers (a SIP edge) and numpy (prompts,
    transcoding, recording exports): ~0.6 s of CPU a start. The anchor's aiortc stays: its
    internals are checked at every start (media/internals.py)."""
    code = "import json, sys; import callgate.runtime; print(json.dumps(sorted(sys.modules)))"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    loaded = set(json.loads(ran.stdout))
    assert {"callgate.runtime", "aiortc", "callgate.media.internals"} <= loaded
    assert sorted(loaded & set(SERVE_ONLY_WHEN_USED)) == []
