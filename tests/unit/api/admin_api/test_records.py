"""Records, exports, live calls and retention through the admin API (ASGI, no sockets)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import httpx

from callgate.api.deps import Services
from callgate.records.query import CdrFilter, RecordsQuery, encode_cursor
from callgate.records.retention import PurgeJob, Retention
from callgate.storage.models import utcnow
from tests.unit.api.admin_api.seed import T0, FakeLiveCalls, token_of


async def test_keyset_pages_cover_every_call_once(client: httpx.AsyncClient) -> None:
    headers = await token_of(client, "compliance")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/cdrs", params=params, headers=headers)).json()
        assert len(page["items"]) <= 2
        seen += [item["call_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["de0001", "bc0001", "ab0004", "ab0003", "ab0002", "ab0001", "ab0000"]


async def test_filters(client: httpx.AsyncClient) -> None:
    headers = await token_of(client, "admin")

    async def ids(**params: object) -> list[str]:
        response = await client.get("/api/cdrs", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [item["call_id"] for item in response.json()["items"]]

    assert await ids(party="carol") == ["bc0001"]
    assert await ids(disposition="denied") == ["de0001"]
    assert await ids(poor="true") == ["bc0001"]
    assert "bc0001" not in await ids(poor="false")
    since, until = (T0 + timedelta(minutes=1)).isoformat(), (T0 + timedelta(minutes=3)).isoformat()
    assert await ids(since=since, until=until) == ["ab0002", "ab0001"]
    bad = await client.get("/api/cdrs", params={"cursor": "garbage!"}, headers=headers)
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]


async def test_out_of_range_keys_are_refused(client: httpx.AsyncClient) -> None:
    """Found by schemathesis: keys beyond BIGINT once reached the database (500)."""
    headers = await token_of(client, "admin")
    huge = 2**63
    for path in ("/api/audit/entries", "/api/audit/export"):
        response = await client.get(path, params={"after_seq": huge}, headers=headers)
        assert response.status_code == 422, response.text
    cursor = encode_cursor("audit", huge)
    response = await client.get("/api/audit/entries", params={"cursor": cursor}, headers=headers)
    assert response.status_code == 422 and response.json()["detail"] == "cursor is not valid"


async def test_user_sees_only_own_calls_and_details(client: httpx.AsyncClient) -> None:
    alice = await token_of(client, "user")
    items = (await client.get("/api/cdrs", headers=alice)).json()["items"]
    assert {i["call_id"] for i in items} == {f"ab{i:04d}" for i in range(5)} | {"de0001"}
    assert (await client.get("/api/cdrs?party=carol", headers=alice)).json()["items"] == []
    detail = (await client.get("/api/cdrs/ab0001", headers=alice)).json()
    assert detail["cdr"]["caller_user"] == "alice"
    assert [q["reporter"] for q in detail["quality"]] == ["caller"]
    assert [e["action"] for e in detail["events"]] == ["call.ended"]


async def test_cdr_export_streams_and_is_audited(client: httpx.AsyncClient) -> None:
    headers = await token_of(client, "compliance")
    response = await client.get(
        "/api/cdrs/export", params={"format": "csv", "party": "bob"}, headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith('attachment; filename="cdrs-')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["call_id"] for r in rows][:2] == ["de0001", "bc0001"] and len(rows) == 7
    jsonl = await client.get("/api/cdrs/export", params={"format": "jsonl"}, headers=headers)
    assert len([json.loads(line) for line in jsonl.text.splitlines()]) == 7
    entries = (
        await client.get("/api/audit/entries", params={"action": "export.cdr"}, headers=headers)
    ).json()["items"]
    phases = [(e["details"]["phase"], e["details"].get("rows")) for e in entries]
    assert phases == [("start", None), ("end", 7), ("start", None), ("end", 7)]
    assert entries[0]["actor"] == "carol"
    assert entries[0]["details"]["filter"] == {"party": "bob"}


async def test_audit_export_and_verify(client: httpx.AsyncClient, services: Services) -> None:
    headers = await token_of(client, "admin")
    assert services.audit is not None
    size = services.audit.head()[0]
    checkpoint = await client.post("/api/audit/checkpoints", headers=headers)
    assert checkpoint.status_code == 201 and checkpoint.json()["size"] == size
    export = await client.get("/api/audit/export", params={"format": "csv"}, headers=headers)
    rows = list(csv.DictReader(io.StringIO(export.text)))
    # Every entry in chain order, up to this export's own start entry.
    assert [int(r["seq"]) for r in rows] == list(range(1, size + 2))
    assert rows[-1]["action"] == "export.audit"
    verdict = (await client.post("/api/audit/verify", headers=headers)).json()
    assert verdict["ok"] is True and verdict["checkpoints"] == 1
    assert verdict["entries"] == size + 2 and verdict["first_bad_seq"] is None


async def test_admin_ends_a_live_call(client: httpx.AsyncClient, live: FakeLiveCalls) -> None:
    headers = await token_of(client, "admin")
    listed = (await client.get("/api/live-calls", headers=headers)).json()["calls"]
    assert [(c["call_id"], c["state"]) for c in listed] == [("live0001", "connected")]
    ended = await client.post("/api/live-calls/live0001/end", headers=headers)
    assert ended.status_code == 202 and ended.json() == {"call_id": "live0001", "ended": True}
    assert live.ended == [("live0001", "root")]
    again = await client.post("/api/live-calls/live0001/end", headers=headers)
    assert again.status_code == 404


async def test_purge_keeps_held_records(client: httpx.AsyncClient, services: Services) -> None:
    headers = await token_of(client, "admin")
    engine = services.cdrs.engine
    # Every seeded call ended on T0's day; with 1-day retention all are past it now.
    await client.put("/api/retention", json={"cdr_days": 1, "quality_days": 1}, headers=headers)
    await client.put("/api/cdrs/ab0001/legal-hold", json={"hold": True}, headers=headers)
    await client.put("/api/users/carol/legal-hold", json={"hold": True}, headers=headers)
    assert utcnow() - T0 > timedelta(days=1)
    holds = (await client.get("/api/audit/entries?action=legal_hold.set", headers=headers)).json()[
        "items"
    ]
    assert [(e["actor"], e["object"], e["details"]) for e in holds] == [
        ("root", "call:ab0001", {"hold": True}),
        ("root", "user:carol", {"hold": True}),
    ]
    result = (await client.post("/api/retention/purge", headers=headers)).json()
    assert result == {"cdr": 5, "quality": 4, "audit": 0, "held_calls_kept": 2}
    left = [row.call_id for row in RecordsQuery(engine).iter_cdrs(CdrFilter())]
    assert left == ["bc0001", "ab0001"]  # carol's call and the held call
    assert [q.call_id for q in RecordsQuery(engine).call_quality("ab0001")] == ["ab0001"]
    purge = (await client.get("/api/audit/entries?action=retention.purge", headers=headers)).json()[
        "items"
    ][0]
    assert purge["actor"] == "root" and purge["details"]["cdr"]["deleted"] == 5
    assert purge["details"]["cdr"]["invite_from"] == T0.isoformat()
    # Released: the next purge takes them.
    await client.put("/api/cdrs/ab0001/legal-hold", json={"hold": False}, headers=headers)
    await client.put("/api/users/carol/legal-hold", json={"hold": False}, headers=headers)
    assert Retention(engine).purge("root").cdr == 2


async def test_admin_cannot_demote_themselves(client: httpx.AsyncClient) -> None:
    headers = await token_of(client, "admin")
    response = await client.patch("/api/users/root", json={"role": "user"}, headers=headers)
    assert response.status_code == 409
    changed = await client.patch(
        "/api/users/alice", json={"role": "compliance", "groups": ["ops"]}, headers=headers
    )
    body = changed.json()
    assert (body["role"], body["is_admin"], body["groups"]) == ("compliance", False, ["ops"])


async def test_purge_job_runs_only_while_a_period_is_set(services: Services) -> None:
    job = PurgeJob(services.cdrs.engine, interval=3600)
    assert await job.run_once() is None  # everything kept forever: nothing run, nothing audited
    Retention(services.cdrs.engine).set_settings({"cdr": 1}, "root")
    result = await job.run_once()
    assert result is not None and (result.cdr, result.quality) == (7, 0)
