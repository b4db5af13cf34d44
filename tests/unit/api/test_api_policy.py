"""Groups and policy over REST (/api/groups, /api/policy): admins change, compliance reads,
users get 403; every change is audited with before/after; bad input is a precise 422."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.deps import Services
from callgate.clock import ManualClock
from callgate.policy.groups import GroupStore
from callgate.policy.store import PolicyStore
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.storage.db import Store

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
RULE = {"name": "wall", "action": "deny", "caller": {"group": "sales"},
        "callee": {"group": "legal"}, "wall": True, "reason": "ethical wall"}  # fmt: skip
WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/groups", {"name": "ops"}),
    ("PATCH", "/api/groups/sales", {"description": "x"}),
    ("DELETE", "/api/groups/sales", None),
    ("PUT", "/api/groups/sales/members/bob", None),
    ("DELETE", "/api/groups/sales/members/alice", None),
    ("POST", "/api/policy/rules", RULE),
    ("PUT", "/api/policy/rules/1", RULE),
    ("DELETE", "/api/policy/rules/1", None),
    ("POST", "/api/policy/rules/1/move", {"position": 1}),
    ("PUT", "/api/policy/settings", {"default_action": "deny"}),
]
READS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/groups", None),
    ("GET", "/api/groups/sales", None),
    ("GET", "/api/policy", None),
    ("GET", "/api/policy/rules/1", None),
    ("POST", "/api/policy/explain", {"caller": "alice", "callee": "bob"}),
]


@pytest.fixture
def services(store: Store) -> Services:
    clock = ManualClock(start_wall=T0.timestamp())
    accounts = AccountService(store, "callgate", clock, Passwords(CHEAP))
    accounts.create_user("alice", None, ["sales"], "pw-alice")
    accounts.create_user("bob", None, ["legal"], "pw-bob")
    accounts.create_user("root", None, (), "pw-root", is_admin=True)
    accounts.create_user("cora", None, (), "pw-cora", role="compliance")
    return Services(
        accounts=accounts,
        cdrs=CdrRepository(store, clock),
        policy=PolicyStore(store, clock),
        groups=GroupStore(store, clock),
    )


async def login(client: httpx.AsyncClient, handle: str) -> dict[str, str]:
    response = await client.post("/api/login", json={"handle": handle, "password": f"pw-{handle}"})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
async def root(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client, "root")


@pytest.fixture
async def seeded(client: httpx.AsyncClient, root: dict[str, str]) -> None:
    for name in ("sales", "legal"):
        response = await client.post("/api/groups", json={"name": name}, headers=root)
        assert response.status_code == 201, response.text
    response = await client.post("/api/policy/rules", json=RULE, headers=root)
    assert response.status_code == 201, response.text


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_writes_are_for_admins_only(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    for handle in ("alice", "cora"):
        headers = await login(client, handle)
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (handle, response.text)
    assert (await client.request(method, path, json=body)).status_code == 401


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("method", "path", "body"), READS)
async def test_compliance_reads_users_do_not(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    cora = await login(client, "cora")
    assert (await client.request(method, path, json=body, headers=cora)).status_code == 200
    alice = await login(client, "alice")
    assert (await client.request(method, path, json=body, headers=alice)).status_code == 403


async def test_admin_sets_up_groups_and_rules(
    client: httpx.AsyncClient, root: dict[str, str], store: Store
) -> None:
    created = await client.post(
        "/api/groups",
        json={"name": "sales", "description": "Sales", "turn_max_allocations": 4},
        headers=root,
    )
    assert created.status_code == 201
    assert created.json()["members"] == ["alice"]  # membership comes from the account
    added = await client.put("/api/groups/sales/members/bob", headers=root)
    assert added.json()["members"] == ["alice", "bob"]
    again = await client.put("/api/groups/sales/members/bob", headers=root)
    assert again.status_code == 409 and "already in group" in again.json()["detail"]
    assert (await client.put("/api/groups/sales/members/nobody", headers=root)).status_code == 404

    first = await client.post(
        "/api/policy/rules",
        json={"name": "night", "action": "deny", "days": [0, 1, 2, 3, 4],
              "window": {"start": "22:00", "end": "06:00"}, "reason": "after hours"},
        headers=root,
    )  # fmt: skip
    assert first.status_code == 201, first.text
    second = await client.post(
        "/api/policy/rules",
        json={"name": "short", "action": "allow", "caller": {"group": "sales"},
              "max_duration_s": 600, "position": 1},
        headers=root,
    )  # fmt: skip
    assert second.json()["position"] == 1
    policy = (await client.get("/api/policy", headers=root)).json()
    assert [(r["name"], r["position"]) for r in policy["rules"]] == [("short", 1), ("night", 2)]
    moved = await client.post(
        f"/api/policy/rules/{second.json()['id']}/move", json={"position": 2}, headers=root
    )
    assert moved.json()["position"] == 2
    policy = (await client.get("/api/policy", headers=root)).json()
    assert [r["name"] for r in policy["rules"]] == ["night", "short"]

    # A group a rule names cannot be deleted; the rule must change first.
    refused = await client.delete("/api/groups/sales", headers=root)
    assert refused.status_code == 409 and "used by rule" in refused.json()["detail"]

    entries = [(e.action, e.object, json.loads(e.details)) for e in AuditLog(store).recent(20)]
    actions = [a for a, _, _ in entries]
    for action in ("group.create", "group.member_add", "policy.rule_create", "policy.rule_move"):
        assert action in actions
    move = next(d for a, _, d in entries if a == "policy.rule_move")
    assert (move["before"], move["after"]) == ({"position": 1}, {"position": 2})
    member = next(d for a, _, d in entries if a == "group.member_add")
    assert (member["before"], member["after"]) == (["legal"], ["legal", "sales"])


@pytest.mark.usefixtures("seeded")
async def test_update_is_audited_with_before_and_after(
    client: httpx.AsyncClient, root: dict[str, str], store: Store
) -> None:
    changed = {**RULE, "reason": "compliance says no"}
    response = await client.put("/api/policy/rules/1", json=changed, headers=root)
    assert response.status_code == 200 and response.json()["reason"] == "compliance says no"
    entry = next(e for e in AuditLog(store).recent(10) if e.action == "policy.rule_update")
    details = json.loads(entry.details)
    assert (entry.actor, entry.object) == ("root", "rule:1")
    assert details["before"]["reason"] == "ethical wall"
    assert details["after"]["reason"] == "compliance says no"


@pytest.mark.usefixtures("seeded")
async def test_explain_names_the_wall_both_ways(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    for caller, callee in (("alice", "bob"), ("bob", "alice")):
        body = {"caller": caller, "callee": callee, "at": "2026-11-27T10:00:00Z"}
        result = (await client.post("/api/policy/explain", json=body, headers=root)).json()
        assert (result["decision"], result["rule_id"], result["rule_name"]) == ("deny", 1, "wall")
        assert result["trace"][-1].startswith("rule 1:wall (order 1): matches")
    unknown = await client.post(
        "/api/policy/explain", json={"caller": "alice", "callee": "zed"}, headers=root
    )
    assert unknown.status_code == 404 and unknown.json()["detail"] == "no user 'zed'"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"name": "x", "action": "deny", "relay_only": True}, "only apply to allow rules"),
        ({"name": "bad name", "action": "deny"}, "name must be 1-64"),
        ({"name": "x", "action": "allow", "days": ["mon"]}, "days"),
        ({"name": "x", "action": "allow", "window": {"start": "25:00", "end": "01:00"}}, "start"),
    ],
)
async def test_bad_rules_are_refused_precisely(
    client: httpx.AsyncClient, root: dict[str, str], body: dict[str, Any], detail: str
) -> None:
    response = await client.post("/api/policy/rules", json=body, headers=root)
    assert response.status_code == 422
    assert detail in json.dumps(response.json()["detail"])
    assert (await client.get("/api/policy", headers=root)).json()["rules"] == []


async def test_settings_reject_an_unknown_time_zone(
    client: httpx.AsyncClient, root: dict[str, str]
) -> None:
    response = await client.put(
        "/api/policy/settings", json={"time_zone": "Mars/Base"}, headers=root
    )
    assert response.status_code == 422 and "Mars/Base" in response.json()["detail"]
    ok = await client.put(
        "/api/policy/settings",
        json={"time_zone": "Europe/Paris", "default_action": "deny"},
        headers=root,
    )
    assert ok.json() == {"default_action": "deny", "time_zone": "Europe/Paris"}
