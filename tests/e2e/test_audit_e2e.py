"""The audit trail of a real `callgate serve`: config.start at start, sign-ins, a call's
lifecycle, periodic signed checkpoints (a short interval here), a last one on SIGTERM, and
`callgate audit verify` against the checkpoint a witness exported."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from callgate.client.errors import LoginError
from callgate.client.signaling import SignalingClient
from callgate.records.audit import AuditLog, StoredCheckpoint, export_checkpoint
from callgate.storage.db import open_store
from tests.e2e.helpers import Serve, add_users, connected, new_serve, next_of

pytestmark = pytest.mark.timeout(180)


def audit_entries(server: Serve) -> list[dict[str, Any]]:
    store = open_store(server.database)
    try:
        return [e.as_json() for e in AuditLog(store).iter_entries()]
    finally:
        store.close()


async def witness_copy(server: Serve, out: Path, timeout: float = 30.0) -> str:
    """What a witness does while the server runs: wait for a signed checkpoint, keep a copy."""
    store = open_store(server.database)

    async def poll() -> StoredCheckpoint:
        while not (found := await asyncio.to_thread(AuditLog(store).checkpoints)):
            await asyncio.sleep(0.1)
        return found[-1]

    try:
        export_checkpoint(await asyncio.wait_for(poll(), timeout), out)
    finally:
        store.close()
    return out.read_text()


async def test_serve_audits_and_signs_checkpoints(tmp_path: Path, offer_sdp: str) -> None:
    users = tmp_path / "users"
    add_users(users)  # with `callgate user add` itself, not the template's cheap hashes
    server = new_serve(tmp_path, template=users, CALLGATE_AUDIT__CHECKPOINT_INTERVAL_S="0.3")
    server.start()
    try:
        with pytest.raises(LoginError):
            await SignalingClient.login(server.url, "alice", "not her password")
        async with connected(server, "alice") as alice, connected(server, "bob") as bob:
            ack = await alice.request("call.invite", to="bob", sdp=offer_sdp)
            call_id = str(ack["call_id"])
            await next_of(bob, "call.incoming", call_id)
            await alice.request("call.hangup", call_id=call_id)
            await next_of(bob, "call.ended", call_id)
        witness = await witness_copy(server, tmp_path / "witness.txt")
    finally:
        assert server.stop() == 0, server.log()

    entries = audit_entries(server)
    actions = [e["action"] for e in entries]
    # The users were added with `callgate user add` on the data dir before the server started.
    start = actions.index("config.start")
    assert actions[:start] == ["user.create"] * 3
    assert all(e["actor"].startswith("cli:") for e in entries[:start])
    assert entries[start]["details"]["settings"]["audit"]["checkpoint_interval_s"] == 0.3
    assert actions.count("auth.login_failed") == 1 and actions.count("auth.login") == 2
    call = [(e["action"], e["actor"]) for e in entries if e["object"] == f"call:{call_id}"]
    assert call == [("call.invite", "alice"), ("call.ended", "alice")]
    ended = next(e for e in entries if e["action"] == "call.ended")
    assert (ended["details"]["disposition"], ended["details"]["reason"]) == (
        "cancelled",
        "cancelled",
    )

    # Checkpoints were signed while serving and once more on the way out, covering everything.
    verified = server.cli(
        "audit", "verify", "--json", "--from-checkpoint", str(tmp_path / "witness.txt")
    )
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert result["ok"] is True and result["size"] == len(entries)
    assert result["checkpoints"] >= 3  # periodic one(s), the final one, and the witness's copy
    assert witness.startswith("callgate-audit\n")
    last = server.cli("audit", "export-checkpoint")
    assert last.stdout.startswith(f"callgate-audit\n{len(entries)}\n"), last.stdout
