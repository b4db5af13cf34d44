"""A recorded call across two nodes to a SIP phone (docs/sip.md, "Recorded calls to phones"):
NOT collected by the suite (the suite has no time to spare for two more `serve` nodes on
PostgreSQL); run it by hand:

    .venv/bin/pytest tests/e2e/cluster_phone_check.py -q

Two `callgate serve` nodes on one PostgreSQL and a Redis; a rule says calls to alice are
recorded, and her only device is a desk phone registered on node b. bob's CLI softphone on
node a calls her: node a holds the call and records it through its anchor; the directory says
alice's device on b is a phone, so the anchor offers G.711 (PCMU), which the phone takes; the
phone's bridge on b allocates on node a's relay (the anchor's: a relay pairs only its own
allocations), and the phone hears bob's 660 Hz tone.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from callgate.media.rtp_leg import PCMU, RtpPacket, build_rtp
from callgate.storage.db import open_store
from tests.cheap_passwords import template_accounts
from tests.db_backends import PgServer
from tests.e2e.helpers import (
    callgate,
    cdr_row,
    finish,
    http_json,
    login,
    new_serve,
    password_of,
    start_cli,
    wait_for,
)
from tests.integration.sip_client import dominant_hz, tone_ulaw, ulaw_decode
from tests.integration.test_cli import free_port
from tests.integration.test_sip_edge import (
    phone_answers,
    phone_requests,
    received_rtp,
    register_phone,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)


async def test_a_recorded_call_reaches_a_phone_on_another_node(
    tmp_path: Path, pg_server: PgServer, pg_users: str, redis_server: RedisServer
) -> None:
    database_url = pg_server.new_database(pg_users)
    sip_port = free_port()
    common = {
        "CALLGATE_REDIS_URL": redis_server.url,
        "CALLGATE_CLUSTER_KEY_FILE": str(redis_server.cluster_key),
        "CALLGATE_TURN__AUTH_SECRET": "cluster-phone-shared-turn-secret",
        "CALLGATE_SIP__ALLOW_MEDIA": "127.0.0.1/32",
    }
    a = new_serve(tmp_path / "a", database_url=database_url, CALLGATE_NODE_ID="a", **common)
    b = new_serve(tmp_path / "b", database_url=database_url, CALLGATE_NODE_ID="b",
                  CALLGATE_SIP__LISTEN=f'["127.0.0.1:{sip_port}"]', **common)  # fmt: skip
    store = open_store(database_url)
    try:
        template_accounts(store).create_user("root", password=password_of("root"), is_admin=True)
    finally:
        store.close()
    env = {"CALLGATE_DATABASE_URL": database_url}
    added = callgate("sip", "add", "alice", "desk", "--data-dir", str(b.data_dir), "--json", **env)
    assert added.returncode == 0, added.stderr
    device = json.loads(added.stdout)
    rule = callgate("policy", "add", "record-to-alice", "allow", "--to-user", "alice",
                    "--recording-required", "--position", "1", "--data-dir", str(a.data_dir),
                    **env)  # fmt: skip
    assert rule.returncode == 0, rule.stderr
    a.start(timeout=90)
    b.start(timeout=90)
    phone = register_phone(sip_port, device["username"], device["password"])
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    try:
        admin = await login(a, "root")

        def alice_online() -> bool:
            _status, body = http_json(f"{a.url}/api/directory", token=admin)
            return {u["handle"]: u["presence"] for u in body["users"]}.get("alice") == "online"

        await wait_for(alice_online, 30, "alice's phone (on b) online on a")
        bob = await start_cli(a, "bob", "call", "alice", "--tone", "660", "--duration", "3",
                              config_dir=tmp_path)  # fmt: skip

        def phone_side() -> tuple[bytes, list[str]]:
            _, at_server = phone_answers(phone, rtp)  # asserts a PCMU offer
            heard, methods, n = bytearray(), [], 0
            deadline = time.monotonic() + 60
            while "BYE" not in methods and time.monotonic() < deadline:
                packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x5555, tone_ulaw(880.0, n * 160))
                rtp.sendto(build_rtp(packet), at_server)
                heard += b"".join(p for _, p in received_rtp(rtp))
                methods += phone_requests(phone)
                time.sleep(0.02)
                n += 1
            return bytes(heard), methods

        heard, methods = await asyncio.to_thread(phone_side)
        seen: list[dict[str, Any]] = []
        code, events, errors = await finish(bob, seen)
        assert code == 0, errors
        assert "BYE" in methods, methods
        assert len(heard) > 8000 and abs(dominant_hz(ulaw_decode(heard[-8000:])) - 660) < 10
        recording = next(e for e in events if e["event"] == "recording")
        record = cdr_row(database_url, recording["call_id"])
        assert record is not None and record["node_id"] == "a" and record["anchored"], record
    finally:
        phone.close()
        rtp.close()
        a.stop()
        b.stop()
