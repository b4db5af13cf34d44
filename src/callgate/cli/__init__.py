"""The `callgate` command line. `app.py` builds the root command and registers every command
group explicitly; each group lives in its own module (`users.py`, `groups.py`, `policy.py`,
`cdr.py`, `audit.py`, `export.py`, `retention.py`, `detect.py`), `common.py` holds the options and
helpers they share and `output.py` the consoles they print with.

The modules import the settings, the store, the accounts and the runtime inside the commands that
use them, never at the top: `callgate --help` builds every command, and each `callgate` process
would pay for them (tests/unit/cli/test_cli_imports.py checks).

Kept free of imports: `callgate detect` imports `callgate.cli.output` without loading the rest.
"""
