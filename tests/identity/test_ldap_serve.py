"""Directory sign-in end to end: `callgate serve` configured with CALLGATE_IDENTITY__LDAP__*
against a real slapd, driven over HTTP and the signaling WebSocket, on SQLite and PostgreSQL.

The tests of a module share one server and run in order: sign-ins first, then the directory
changes (disable, delete) and the outage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Table

from callgate.client.signaling import SignalingError
from callgate.storage.models import AuditEntry, User
from tests.db_backends import BACKENDS, PgServer
from tests.e2e.helpers import (
    Serve,
    callgate,
    connected,
    free_port,
    http_json,
    next_of,
    private_relay_range,
    rows_of,
    store_env,
    wait_for,
)
from tests.identity.conftest import ldap_env
from tests.identity.slapd import PASSWORDS, ROOT_PW, SERVICE_PW, Slapd, ssha, user_dn

USERS: Table = User.__table__  # type: ignore[assignment]
AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]
LOCAL_BOB_PW = "local-sesame-43"
SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
ADMIN_PW = "break-glass-sesame-44"


@pytest.fixture(scope="module", params=BACKENDS)
def serve(
    request: pytest.FixtureRequest, slapd: Slapd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    """A server with two local accounts, `bob` and the administrator `breakglass`, and the
    directory on, checked every second."""
    root = tmp_path_factory.mktemp("ldap-serve")
    data_dir = root / "data"
    data_dir.mkdir()
    database_url = None
    if request.param == "postgresql":
        pg: PgServer = request.getfixturevalue("pg_server")
        database_url = pg.new_database()
    for handle, password, extra in [
        ("bob", LOCAL_BOB_PW, []),
        ("breakglass", ADMIN_PW, ["--admin"]),
    ]:
        added = callgate(
            "user", "add", handle, *extra, "--data-dir", str(data_dir), "--password-stdin",
            stdin=password + "\n", **store_env(database_url),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    server = Serve(
        data_dir=data_dir,
        http_port=free_port(),
        turn_port=free_port(),
        relay_ports=private_relay_range(),
        log_path=root / "serve.log",
        database_url=database_url,
        # A first sign-in delay of a minute: the throttling test cannot depend on machine speed.
        env={**ldap_env(slapd, CHECK_INTERVAL_S="1"), "CALLGATE_LIMITS__LOGIN_DELAY_S": "60"},
    ).start()
    try:
        yield server
    finally:
        code = server.stop()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    every_entry = json.dumps([str(row) for row in rows_of(server.database, AUDIT)])
    assert "config.start" in every_entry
    for secret in [*PASSWORDS.values(), SERVICE_PW, ROOT_PW, LOCAL_BOB_PW, ADMIN_PW]:
        assert secret not in log, "a password is in the server log"
        assert secret not in every_entry, "a password is in the audit log"


def login(server: Serve, handle: str, password: str) -> tuple[int, Any]:
    return http_json(f"{server.url}/api/login", body={"handle": handle, "password": password})


def audit(server: Serve, action: str) -> list[dict[str, Any]]:
    rows = rows_of(server.database, AUDIT, AUDIT.c.action == action, order=("seq",))
    return [{**row, "details": json.loads(row["details"])} for row in rows]


def account(server: Serve, handle: str) -> dict[str, Any] | None:
    rows = rows_of(server.database, USERS, USERS.c.handle == handle)
    return rows[0] if rows else None


def test_directory_user_gets_an_account_at_first_sign_in(serve: Serve) -> None:
    status, body = login(serve, "alice", PASSWORDS["alice"])
    assert status == 200, body
    assert body["user"]["source"] == "ldap"
    assert body["user"]["display_name"] == "Alice Martin"
    # voice-admins (nested: it-staff is in it) -> admin; it-staff -> it, everyone -> staff.
    assert body["user"]["role"] == "admin"
    assert body["user"]["groups"] == ["it", "staff"]
    status, users = http_json(f"{serve.url}/api/users", token=body["token"])
    assert status == 200
    by_handle = {u["handle"]: u for u in users["users"]}
    assert by_handle["alice"]["source"] == "ldap"
    assert by_handle["alice"]["email"] == "alice@example.com"
    assert by_handle["alice"]["has_password"] is False
    assert by_handle["bob"]["source"] == "local"
    created = [e for e in audit(serve, "user.create") if e["object"] == "user:alice"]
    assert created[0]["actor"] == "identity:ldap"
    assert created[0]["details"]["source"] == "ldap"
    assert created[0]["details"]["mapping"]["roles"] == {"voice-admins": "admin"}
    assert "loop-a" not in created[0]["details"]["directory_groups"]
    signed = [e for e in audit(serve, "auth.login") if e["object"] == "user:alice"]
    assert signed[-1]["details"]["method"] == "ldap"


def test_second_sign_in_reuses_the_account(serve: Serve) -> None:
    status, body = login(serve, "alice", PASSWORDS["alice"])
    assert status == 200 and body["user"]["source"] == "ldap"
    assert len([e for e in audit(serve, "user.create") if e["object"] == "user:alice"]) == 1


@pytest.mark.parametrize(
    ("handle", "password", "reason"),
    [
        ("alice", "wrong", "unknown user or wrong password"),
        ("*", PASSWORDS["alice"], "unknown user or wrong password"),
        ("al*", PASSWORDS["alice"], "unknown user or wrong password"),
        ("alice)(uid=*", PASSWORDS["alice"], "unknown user or wrong password"),
        ("dave", PASSWORDS["dave"], "disabled in the directory"),
        ("weird name", PASSWORDS["Weird Name"], "directory name is not a usable handle"),
    ],
)
def test_refusals_say_invalid_credentials_and_are_audited(
    serve: Serve, handle: str, password: str, reason: str
) -> None:
    before = len(rows_of(serve.database, USERS))
    status, body = login(serve, handle, password)
    assert (status, body["detail"]) == (401, "invalid credentials")
    failed = audit(serve, "auth.login_failed")[-1]["details"]
    assert (failed["handle"], failed["method"], failed["reason"]) == (handle, "ldap", reason)
    assert len(rows_of(serve.database, USERS)) == before  # nothing created


def test_local_account_is_checked_locally_only(serve: Serve) -> None:
    """Local bob signs in with his local password; the directory's bob cannot take his name."""
    status, body = login(serve, "bob", LOCAL_BOB_PW)
    assert status == 200 and body["user"]["source"] == "local"
    status, _ = login(serve, "bob", PASSWORDS["bob"])
    assert status == 401
    status, _ = login(serve, "breakglass", ADMIN_PW)
    assert status == 200


def login_from(server: Serve, source: str, handle: str, password: str) -> httpx.Response:
    """POST /api/login from the loopback address `source` (the throttle counts per address)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        body = {"handle": handle, "password": password}
        return client.post(f"{server.url}/api/login", json=body)


def test_guessing_directory_passwords_is_throttled_before_the_directory_is_asked(
    serve: Serve,
) -> None:
    """Issue 16 item 6: LDAP sign-in is behind the same throttle as local sign-in."""
    codes = [
        login_from(serve, f"127.0.7.{i + 1}", "frank", f"guess-{i}").status_code for i in range(5)
    ]
    assert codes == [401] * 5
    right = login_from(serve, "127.0.7.50", "frank", PASSWORDS["frank"])
    assert right.status_code == 429  # even the right password: nothing is checked now
    assert right.json()["detail"].startswith("too many failed sign-ins: retry in ")
    assert 1 <= int(right.headers["Retry-After"]) <= 60
    asked = [e for e in audit(serve, "auth.login_failed") if e["details"]["handle"] == "frank"]
    assert [e["details"]["method"] for e in asked] == ["ldap"] * 5  # not a 6th bind
    # A name the directory does not know gets exactly the same answers.
    unknown = [
        login_from(serve, f"127.0.8.{i + 1}", "nobody-here", "x").status_code for i in range(7)
    ]
    assert unknown == [401] * 5 + [429] * 2
    # One address guessing many names is stopped too; another address is not.
    many = [login_from(serve, "127.0.9.1", f"name{i}", "x").status_code for i in range(21)]
    assert many == [401] * 20 + [429]
    assert login_from(serve, "127.0.9.2", "name99", "x").status_code == 401
    throttled = [e["details"] for e in audit(serve, "auth.login_throttled")]
    limits = {(t["handle"], t["limit"]) for t in throttled}
    assert {("frank", "account"), ("nobody-here", "account"), ("name20", "address")} <= limits
    assert len([t for t in throttled if t["handle"] == "nobody-here"]) == 1  # once per run
    assert "frank-dir-pw" not in json.dumps(throttled)


async def test_disabled_in_directory_loses_tokens_calls_and_socket(
    serve: Serve, slapd: Slapd
) -> None:
    status, body = login(serve, "alice", PASSWORDS["alice"])
    assert status == 200
    token = body["token"]
    bob_token = login(serve, "bob", LOCAL_BOB_PW)[1]["token"]
    async with (
        connected(serve, "alice", token=token) as alice,
        connected(serve, "bob", token=bob_token) as bob,
    ):
        call_id = (await alice.request("call.invite", to="bob", sdp=SDP))["call_id"]
        await next_of(bob, "call.incoming", call_id)
        await bob.request("call.answer", call_id=call_id, sdp=SDP)
        await next_of(alice, "call.answered", call_id)
        slapd.modify(
            f"dn: {user_dn('alice')}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n"
        )
        try:
            # The check runs every second here: it ends her call and closes her socket itself
            # (ended-by-admin), not the sockets' own 15 s token check.
            ended = await next_of(bob, "call.ended", call_id, timeout=30)
            assert ended["reason"] == "ended-by-admin"
            await wait_for(lambda: alice.closed, 30, "alice's socket closed")
            with pytest.raises(SignalingError) as closed:
                await alice.request("call.invite", to="bob", sdp=SDP)
            assert closed.value.code == "unauthorized"  # 4401
            assert http_json(f"{serve.url}/api/me", token=token)[0] == 401
        finally:
            slapd.modify(f"dn: {user_dn('alice')}\nchangetype: modify\ndelete: employeeType\n")
    by = [e for e in audit(serve, "call.end_by_admin") if e["object"] == f"call:{call_id}"]
    assert by[-1]["actor"] == "identity:ldap"
    row = account(serve, "alice")
    assert row is not None and row["disabled"]
    disabled = [e for e in audit(serve, "user.disable") if e["object"] == "user:alice"]
    assert disabled[-1]["details"]["reason"] == "disabled in the directory"
    assert disabled[-1]["actor"] == "identity:ldap"
    # Enabled again in the directory, the account stays disabled until an admin enables it.
    status, _ = login(serve, "alice", PASSWORDS["alice"])
    assert status == 401
    assert audit(serve, "auth.login_failed")[-1]["details"]["reason"] == (
        "account disabled in callgate"
    )


async def test_removed_from_directory_loses_tokens(serve: Serve, slapd: Slapd) -> None:
    status, body = login(serve, "erin", PASSWORDS["erin"])
    assert status == 200 and body["user"]["groups"] == []
    token = body["token"]
    slapd.modify(f"dn: {user_dn('erin')}\nchangetype: delete\n")
    try:
        await wait_for(
            lambda: http_json(f"{serve.url}/api/me", token=token)[0] == 401, 60, "token dead"
        )
    finally:
        # Back as a new entry (a new entryUUID), for the next backend's run of this module.
        slapd.modify(
            f"dn: {user_dn('erin')}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: erin\n"
            f"cn: Erin Solo\nsn: Solo\nuserPassword: {ssha(PASSWORDS['erin'])}\n"
        )
    disabled = [e for e in audit(serve, "user.disable") if e["object"] == "user:erin"]
    assert disabled[-1]["details"]["reason"] == "removed from the directory"


def test_directory_down_local_admin_still_signs_in(serve: Serve, slapd: Slapd) -> None:
    slapd.stop()
    try:
        status, body = login(serve, "breakglass", ADMIN_PW)
        assert status == 200, body
        status, body = login(serve, "carol", "whatever")
        assert status == 503
        assert body["detail"] == "the directory cannot be reached; local accounts can still sign in"
        failed = audit(serve, "auth.login_failed")[-1]["details"]
        assert failed["reason"] == "directory unavailable"
        assert "whatever" not in json.dumps(failed)
    finally:
        slapd.restart()
    # Back up: the directory check resumes and disables nobody for the outage.
    row = account(serve, "bob")
    assert row is not None and not row["disabled"]
