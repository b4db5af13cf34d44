"""`callgate cdr list`, `cdr export` and `audit export` through a running server's API
(`--server` / CALLGATE_SERVER), like the user commands, and the store-only read commands
refusing CALLGATE_SERVER instead of quietly reading ./data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen, new_call_id
from callgate.storage.db import open_store
from tests.integration.test_cli_users_api import Server, run, server

__all__ = ["server"]  # the fixture: one `callgate serve` per store backend


def add_call(server: Server, caller: str, callee: str, seconds: float) -> str:
    """A finished call written to the running server's store, as its hub would."""
    store = open_store(server.database_url)
    try:
        cdrs = CdrRepository(store)
        call_id = new_call_id()
        start = datetime.now(UTC) - timedelta(minutes=5)
        cdrs.open(CallOpen(call_id, caller, callee, start, caller_device="d1"))
        cdrs.update(call_id, answer_at=start + timedelta(seconds=1))
        cdrs.finalize(
            call_id, start + timedelta(seconds=1 + seconds), "answered", "callee", "hangup"
        )
    finally:
        store.close()
    return call_id


@pytest.mark.timeout(300)  # a dozen CLI processes, each a few seconds on a busy machine
def test_cdr_list_reads_the_server_named_by_callgate_server(server: Server) -> None:
    url = server.url
    first = add_call(server, "alice", "bob", 12)
    second = add_call(server, "carol", "dave", 3)
    empty = {"CALLGATE_CONFIG_DIR": str(server.cwd / "no-session")}

    # no session yet: a clear refusal, not an empty listing of ./data
    refused = run(server, "cdr", "list", CALLGATE_SERVER=url, **empty)
    assert refused.returncode == 1 and "not signed in" in refused.stderr, refused
    signed_in = run(
        server, "login", "--server", url, "--user", "admin", "--password-stdin",
        stdin=server.admin_password + "\n",
    )  # fmt: skip
    assert signed_in.returncode == 0, signed_in.stderr

    listed = run(server, "cdr", "list", "--json", CALLGATE_SERVER=url)
    assert listed.returncode == 0, listed.stderr
    rows = {r["call_id"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert set(rows) == {first, second}
    assert (rows[first]["caller_user"], rows[first]["duration_s"]) == ("alice", 12.0)
    only_bob = run(server, "cdr", "list", "--json", "--user", "bob", "--server", url)
    assert [json.loads(line)["call_id"] for line in only_bob.stdout.splitlines()] == [first]
    table = run(server, "cdr", "list", CALLGATE_SERVER=url)
    assert table.returncode == 0 and "carol" in table.stdout and "12.0s" in table.stdout
    # a one-shot sign-in as a named admin works too (--as, its password from the environment)
    as_admin = run(
        server, "cdr", "list", "--json", "--server", url, "--as", "admin",
        CALLGATE_ADMIN_PASSWORD=server.admin_password, **empty,
    )  # fmt: skip
    assert as_admin.returncode == 0 and len(as_admin.stdout.splitlines()) == 2, as_admin.stderr

    # the exports stream the server's export API, audited there as the signed-in reader
    exported = run(server, "cdr", "export", "--format", "jsonl", "--party", "bob", "--server", url)
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["call_id"] for line in exported.stdout.splitlines()] == [first]
    assert f"from {url}" in exported.stderr
    audit = run(server, "audit", "export", "--action", "export.cdr", CALLGATE_SERVER=url)
    assert audit.returncode == 0, audit.stderr
    entries = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(e["actor"], e["action"]) for e in entries][-1] == ("admin", "export.cdr"), entries

    # the commands that work on a store say so instead of reading ./data
    for command in (["audit", "list"], ["retention", "show"]):
        result = run(server, *command, CALLGATE_SERVER=url)
        assert result.returncode == 2, (command, result)
        assert "works on a store, not through CALLGATE_SERVER" in result.stderr, result.stderr
    # and with the store named, they do (here the server's own database)
    local = run(
        server, "cdr", "list", "--json", "--data-dir", str(server.cwd / "data"),
        CALLGATE_SERVER=url, CALLGATE_DATABASE_URL=server.database_url,
    )  # fmt: skip
    assert local.returncode == 0 and len(local.stdout.splitlines()) == 2, local.stderr
