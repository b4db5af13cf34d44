"""deploy/relay-role.sql, run as the file says on the suite's real PostgreSQL: a registered relay
logged in as that role does everything it does with the database (checks the schema, closes a
previous run's sessions, records sessions and their audit entries, probes the storage), and can
read or change none of the rest (users, tokens, call records)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from callgate.records.audit import AuditLog
from callgate.records.relay_sessions import DbEventSink, close_stale_sessions
from callgate.storage.db import open_store
from callgate.storage.health import StorageHealth
from callgate.types.events import AuthThrottled, EventKind
from tests.conftest import allocation_event
from tests.db_backends import PgServer

ROLE_SQL = Path(__file__).resolve().parents[2] / "deploy" / "relay-role.sql"
T0 = 1_700_000_000.0


def test_the_relay_role_does_what_a_relay_does_and_nothing_else(pg_server: PgServer) -> None:
    owner_url = pg_server.new_database()
    database = make_url(owner_url).database
    role, password = f"callgate_relay_{database}", secrets.token_urlsafe(24)
    sql = ROLE_SQL.read_text().replace("callgate_relay", role).replace("CHANGE-ME", password)
    sql = sql.replace("DATABASE callgate", f'DATABASE "{database}"')
    owner = open_store(owner_url)
    try:
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(sql)
        relay_url = make_url(owner_url).set(username=role, password=password)
        url = relay_url.render_as_string(hide_password=False)
        relay = open_store(url, migrate_schema=False)
        try:
            sink = DbEventSink(relay.sessions, relay_id="eu1")
            try:
                sink.emit(allocation_event(EventKind.CREATED, T0, allocation_id="b" * 32))
                sink.emit(allocation_event(EventKind.CREATED, T0))
                sink.emit(allocation_event(EventKind.DELETED, T0 + 9, end_reason="client"))
                blocked = AuthThrottled("address", "192.0.2.1", 10, 0, 5.0, 1, T0, "192.0.2.1", "x")
                sink.emit(blocked)
                assert sink.flush() and sink.write_errors == 0
            finally:
                sink.close()
            assert close_stale_sessions(relay.sessions, relay_id="eu1") == 1  # b…b: crashed
            assert StorageHealth(relay).probe()
            for denied in ["SELECT * FROM users", "SELECT * FROM api_tokens",
                           "SELECT * FROM calls", "UPDATE calls SET node_id = 'x'",
                           "DELETE FROM audit_entries", "DROP TABLE relay_sessions"]:  # fmt: skip
                refused = pytest.raises(ProgrammingError, match=r"permission denied|must be owner")
                with refused, relay.engine.begin() as conn:
                    conn.execute(text(denied))
        finally:
            relay.close()
        with owner.engine.connect() as conn:
            actions = conn.execute(text("SELECT action FROM audit_entries ORDER BY seq")).all()
        assert [a for (a,) in actions][-3:] == [
            "relay.session", "turn.auth_throttled", "relay.session",
        ]  # fmt: skip
        assert AuditLog(owner).verify(None).ok
    finally:
        owner.close()
        with pg_server.admin.connect() as conn:
            pg_server.drop_database(owner_url)
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
