"""Who may use the relay of a running `callgate serve`, attacked over real sockets: sign-in
passwords (an admin's too) never open an allocation, only the TURN REST credentials handed out in
`hello` do; guessing is throttled per source address and per username with 403, and each block is
audited once.

Each attacker uses a loopback source address of its own (127.0.0.x): the nonce, the throttle
and its blocks are per address, so the tests do not block each other or the module's server.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import Table

from callgate.storage.models import AuditEntry
from callgate.stun.attributes import unpack_error_code
from callgate.stun.constants import Attr, MessageClass
from callgate.turn.throttle import DEFAULT_BURST
from tests.e2e.helpers import (
    LOOPBACK,
    RELAY_SESSIONS,
    Serve,
    connected,
    password_of,
    rows_of,
    wait_for,
)
from tests.integration.turn_client import TurnClient, error_code, udp_client

pytestmark = pytest.mark.timeout(120)

AUDIT: Table = AuditEntry.__table__  # type: ignore[assignment]


def _reason(response: object) -> str:
    value = response.get(Attr.ERROR_CODE)  # type: ignore[attr-defined]
    assert value is not None, response
    return unpack_error_code(value)[1]


async def _try(client: TurnClient, username: str, password: str) -> int | None:
    client.username, client.password = username, password
    response = await client.allocate()
    return None if response.cls is MessageClass.SUCCESS else error_code(response)


async def test_sign_in_passwords_never_open_an_allocation(serve: Serve) -> None:
    relay = (LOOPBACK, serve.turn_port)
    async with udp_client(relay, "127.0.0.11") as client:
        assert await _try(client, "alice", password_of("alice")) == 401
        assert await _try(client, "bob", password_of("bob")) == 401
    # The REST credential from `hello` is how a signed-in account reaches the relay.
    async with connected(serve, "alice") as alice:
        turn = next(s for s in alice.hello["ice_servers"] if "username" in s)
        async with udp_client(relay, "127.0.0.12") as client:
            assert await _try(client, turn["username"], turn["credential"]) is None


async def _guess_until_blocked(client: TurnClient, username: str) -> list[int | None]:
    """Wrong passwords until the relay answers 403 (the bucket refills 0.2/s, so a slow machine
    may get a few more 401s than the burst; never fewer)."""
    codes: list[int | None] = []
    while 403 not in codes:
        assert len(codes) < 4 * DEFAULT_BURST, codes
        codes.append(await _try(client, username, f"guess-{len(codes)}"))
    return codes


async def test_password_guessing_is_blocked_with_403_and_audited_once(serve: Serve) -> None:
    relay = (LOOPBACK, serve.turn_port)
    async with udp_client(relay, "127.0.0.21") as client:
        codes = await _guess_until_blocked(client, "carol")
        assert set(codes[:-1]) == {401} and len(codes) > DEFAULT_BURST
        blocked = await client.allocate()
        assert error_code(blocked) == 403
        assert _reason(blocked).startswith("Too many failed authentications; retry in")
        # Blocked means not even checked: a valid REST credential is refused from there too.
        async with connected(serve, "carol") as carol:
            turn = next(s for s in carol.hello["ice_servers"] if "username" in s)
        assert await _try(client, turn["username"], turn["credential"]) == 403
    # Another address is not blocked by this one (the same REST credential works there).
    async with udp_client(relay, "127.0.0.22") as other:
        assert await _try(other, turn["username"], turn["credential"]) is None

    def throttled() -> list[dict[str, object]]:
        rows = rows_of(serve.database, AUDIT, AuditEntry.action == "turn.auth_throttled")
        return [r for r in rows if json.loads(str(r["details"]))["address"] == "127.0.0.21"]

    await wait_for(lambda: len(throttled()) >= 2, 30.0, "turn.auth_throttled audit entries")
    await asyncio.sleep(0.5)  # anything more would be written by now
    entries = throttled()
    # One block per scope, however many requests: the address and the username, once each.
    assert sorted(str(e["object"]) for e in entries) == [
        "turn-address:127.0.0.21",
        "turn-username:carol",
    ]
    for entry in entries:
        details = json.loads(str(entry["details"]))
        assert details["failures"] == len(codes) - 1 and details["strike"] == 1
    assert "guess" not in json.dumps([e["details"] for e in entries])  # no password tried


async def test_one_username_guessed_from_many_addresses_is_blocked(serve: Serve) -> None:
    relay = (LOOPBACK, serve.turn_port)
    codes: list[int | None] = []
    while 403 not in codes:
        assert len(codes) < 4 * DEFAULT_BURST, codes
        async with udp_client(relay, f"127.0.1.{len(codes) + 1}") as client:
            codes.append(await _try(client, "admin", f"guess-{len(codes)}"))
    assert set(codes[:-1]) == {401} and len(codes) > DEFAULT_BURST


async def test_the_relay_is_call_bound_by_default_not_an_open_proxy(serve: Serve) -> None:
    """A signed-in employee with no call cannot open a permission toward a public address
    (198.51.100.7, TEST-NET-2: a permission sends nothing)."""
    relay = (LOOPBACK, serve.turn_port)
    async with connected(serve, "bob") as bob:
        turn = next(s for s in bob.hello["ice_servers"] if "username" in s)
    async with udp_client(relay, "127.0.0.31") as client:
        assert await _try(client, turn["username"], turn["credential"]) is None
        refused = await client.create_permission(("198.51.100.7", 5000))
        assert error_code(refused) == 403
        assert _reason(refused) == "Call-bound relay: peer is not your call's other party"


async def _new_users_relay_credential(serve: Serve, handle: str) -> dict[str, str]:
    """Add `handle` and sign in once: the TURN REST credential its `hello` hands out."""
    serve.add_users([handle])
    async with connected(serve, handle) as client:
        turn: dict[str, str] = next(s for s in client.hello["ice_servers"] if "username" in s)
    return turn


async def _relay_session_ends_as(serve: Serve, handle: str, reason: str) -> None:
    """Wait (up to 10 s) until a relay session of `handle` is recorded ended with `reason`."""

    def ended() -> list[dict[str, object]]:
        rows = rows_of(serve.database, RELAY_SESSIONS, RELAY_SESSIONS.c.user == handle)
        return [r for r in rows if r["end_reason"] == reason]

    await wait_for(ended, 30.0, f"{handle}'s relay session ended as {reason}")


async def test_a_disabled_accounts_credential_and_allocation_end_within_seconds(
    serve: Serve,
) -> None:
    relay = (LOOPBACK, serve.turn_port)
    turn = await _new_users_relay_credential(serve, "dave")
    async with udp_client(relay, "127.0.0.41") as client:
        assert await _try(client, turn["username"], turn["credential"]) is None
        result = serve.cli("user", "disable", "dave")
        assert result.returncode == 0, result.stderr

        async def refused() -> bool:
            async with udp_client(relay, "127.0.0.42") as again:
                return await _try(again, turn["username"], turn["credential"]) == 401

        for _ in range(300):  # the credential is valid for 600 s; refused within seconds
            if await refused():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a disabled account's TURN REST credential still works")
        refresh = await client.refresh()  # its allocation is gone (and its credential refused)
        assert error_code(refresh) in (401, 437)

    await _relay_session_ends_as(serve, "dave", "account-disabled")


async def test_a_removed_accounts_credential_and_allocation_end_within_seconds(
    serve: Serve,
) -> None:
    relay = (LOOPBACK, serve.turn_port)
    turn = await _new_users_relay_credential(serve, "erin")
    async with udp_client(relay, "127.0.0.43") as client:
        assert await _try(client, turn["username"], turn["credential"]) is None
        result = serve.cli("user", "remove", "erin")
        assert result.returncode == 0, result.stderr

        await _relay_session_ends_as(serve, "erin", "account-removed")
    async with udp_client(relay, "127.0.0.44") as again:
        assert await _try(again, turn["username"], turn["credential"]) == 401
