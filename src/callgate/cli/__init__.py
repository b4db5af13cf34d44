"""The `callgate` command line. `app.py` builds the root command and registers every command
group explicitly; each group lives in its own module (`users.py`, `groups.py`, `policy.py`,
`cdr.py`, `audit.py`, `export.py`, `retention.py`, `detect.py`), `common.py` holds the options and
helpers they share and `output.py` the consoles they print with.

Kept free of imports: `callgate detect` imports `callgate.cli.output` without loading the rest.
"""
