"""`callgate group …` and `callgate policy …` as subprocesses: on a stopped server's data dir,
and through a running `callgate serve` with --server (SQLite and PostgreSQL). `policy explain`
prints which rule decides and why every rule before it did not match."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli_process import run_in_process as callgate
from tests.integration.test_cli_users_api import Server, run
from tests.integration.test_cli_users_api import server as server


def cli(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return callgate(*args, "--data-dir", str(data), cwd=data.parent, stdin=stdin)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_explain_on_a_stopped_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(
        cli(
            data,
            "user",
            "add",
            "alice",
            "--group",
            "sales",
            "--password-stdin",
            stdin="alpha-pass-1\n",
        )
    )
    ok(cli(data, "user", "add", "bob", "--password-stdin", stdin="bravo-pass-1\n"))
    ok(cli(data, "group", "create", "legal", "--max-allocations", "2"))
    assert "added bob to legal" in ok(cli(data, "group", "add-member", "legal", "bob"))
    ok(cli(data, "policy", "add", "wall", "deny", "--from-group", "sales", "--to-group", "legal",
           "--wall", "--reason", "ethical wall"))  # fmt: skip
    ok(cli(data, "policy", "add", "nights", "deny", "--days", "mon-fri", "--window",
           "22:00-06:00", "--reason", "after hours", "--position", "1"))  # fmt: skip
    ok(cli(data, "policy", "default", "allow", "--time-zone", "Europe/Paris"))

    # Friday 23:30 in Paris: the night rule (position 1) decides.
    night = ok(cli(data, "policy", "explain", "bob", "alice", "--at", "2026-11-27T23:30"))
    assert night.splitlines()[0] == (
        "bob -> alice at 2026-11-27T23:30:00+01:00 (Europe/Paris): DENY by rule 2 (nights)"
    )
    assert "reason: after hours" in night
    assert "is within Mon,Tue,Wed,Thu,Fri 22:00-06:00 next day -> deny" in night
    # Saturday noon: the night rule does not match (said why), the wall does — in reverse.
    noon = ok(cli(data, "policy", "explain", "bob", "alice", "--at", "2026-11-28T12:00+01:00"))
    lines = noon.splitlines()
    assert lines[0].endswith("DENY by rule 1 (wall)")
    assert "rule 2:nights (order 1): no match, Sat 2026-11-28 12:00 Europe/Paris is outside" in noon
    assert "rule 1:wall (order 2): matches (reverse direction)" in noon
    # No rule matches alice calling alice: the default action, as JSON.
    result = json.loads(ok(cli(data, "policy", "explain", "alice", "alice", "--json",
                               "--at", "2026-11-28T12:00")))  # fmt: skip
    assert (result["decision"], result["rule_id"]) == ("allow", None)
    assert result["trace"][-1] == "no rule matched: default action allow"

    refused = cli(data, "group", "delete", "legal")
    assert refused.returncode == 1
    assert "group 'legal' is used by rule(s) 1: change them first" in refused.stderr
    bad = cli(data, "policy", "add", "x", "deny", "--relay-only")
    assert bad.returncode == 1 and "only apply to allow rules" in bad.stderr
    unknown = cli(data, "policy", "explain", "alice", "zed")
    assert unknown.returncode == 1 and "no user 'zed'" in unknown.stderr

    listed = json.loads(ok(cli(data, "policy", "list", "--json")))
    assert [(r["position"], r["name"]) for r in listed["rules"]] == [(1, "nights"), (2, "wall")]
    ok(cli(data, "policy", "move", "1", "1"))
    ok(cli(data, "policy", "update", "2", "--days", "", "--window", "", "--disabled"))
    listed = json.loads(ok(cli(data, "policy", "list", "--json")))
    assert [(r["name"], r["enabled"], r["window"]) for r in listed["rules"]] == [
        ("wall", True, None), ("nights", False, None),
    ]  # fmt: skip


def test_group_and_policy_through_the_api(server: Server) -> None:
    env = {"CALLGATE_ADMIN_PASSWORD": server.admin_password}
    api = ("--server", server.url, "--user", "admin")
    ok(run(server, "user", "add", "alice", "--password-stdin", *api, stdin="alpha-pass-1\n", **env))
    ok(run(server, "group", "create", "sales", "--description", "Sales", *api, **env))
    assert "added alice to sales" in ok(
        run(server, "group", "add-member", "sales", "alice", *api, **env)
    )
    added = ok(run(server, "policy", "add", "sales-short", "allow", "--from-group", "sales",
                   "--max-duration", "600", "--relay-only", *api, **env))  # fmt: skip
    assert added.startswith("added rule 1 sales-short at position 1")
    shown = json.loads(ok(run(server, "group", "show", "sales", "--json", *api, **env)))
    assert (shown["members"], shown["description"]) == (["alice"], "Sales")
    explained = ok(run(server, "policy", "explain", "alice", "admin", *api, **env))
    assert "ALLOW by rule 1 (sales-short)" in explained
    assert "constraints: relay only, max 600 s" in explained
    refused = run(server, "policy", "remove", "7", *api, **env)
    assert refused.returncode == 1 and "no rule 7" in refused.stderr
