"""The edge's digest authentication with a real store (SQLite), without sockets: parallel answers
of one device are not throttled by each other, failures are, and a stale nonce neither counts
nor clears the failure count."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.accounts.service import AccountService
from callgate.records.audit import AuditLog
from callgate.sip.credentials import Credential, CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.message import SipRequest, parse_datagram
from callgate.sip.transport import Peer
from callgate.storage.db import Store, open_store, sqlite_url

REALM = "callgate.test"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(sqlite_url(tmp_path))
    try:
        AccountService(store, REALM).create_user("alice", None, (), None)
        yield store
    finally:
        store.close()


@pytest.fixture
def desk(store: Store) -> tuple[SipEdge, Credential, str]:
    """alice's desk phone credential and its password, and an edge on the store."""
    credentials = CredentialStore(store, REALM)
    device, password = credentials.add("alice", "desk", "test")
    return SipEdge(credentials), device, password


def current_nonce(edge: SipEdge) -> str:
    return edge.digest.challenges(edge._clock.wall())[0].split('nonce="')[1].split('"')[0]


def register(authorization: str | None = None) -> SipRequest:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    data = (
        "REGISTER sip:callgate.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKx\r\n"
        "From: <sip:alice@callgate.test>;tag=1\r\nTo: <sip:alice@callgate.test>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    message = parse_datagram(data.encode())
    assert isinstance(message, SipRequest)
    return message


def answer(nonce: str, username: str, password: str) -> str:
    ha1 = hashlib.sha256(f"{username}:{REALM}:{password}".encode()).hexdigest()
    ha2 = hashlib.sha256(b"REGISTER:sip:callgate.test").hexdigest()
    response = hashlib.sha256(f"{ha1}:{nonce}:00000001:c:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{username}", realm="{REALM}", nonce="{nonce}", '
        f'uri="sip:callgate.test", response="{response}", algorithm=SHA-256, qop=auth, '
        'nc=00000001, cnonce="c"'
    )


async def test_parallel_answers_pass_failures_throttle_stale_nonces_do_not_reset(
    desk: tuple[SipEdge, Credential, str],
) -> None:
    edge, device, password = desk
    peer = Peer("UDP", ("192.0.2.5", 5060), lambda data, target: None)

    def nonce() -> str:
        return current_nonce(edge)

    # 20 good answers at once, from one device and one address: none is refused
    requests = [register(answer(nonce(), device.username, password)) for _ in range(20)]
    results = await asyncio.gather(*(edge.authenticate(r, peer) for r in requests))
    assert all(credential is not None for credential, _ in results)

    # 5 wrong passwords are free; a stale nonce (not ours) is challenged with stale=true
    # and does not clear them; the next attempt, even with the right password, waits
    for _ in range(5):
        _, refusal = await edge.authenticate(register(answer(nonce(), device.username, "x")), peer)
        assert refusal is not None and refusal.status == 401
    _, stale = await edge.authenticate(register(answer("1.2.3", device.username, "x")), peer)
    assert stale is not None and "stale=true" in (stale.headers.get("www-authenticate") or "")
    _, refused = await edge.authenticate(register(answer(nonce(), device.username, password)), peer)
    assert refused is not None and refused.status == 403
    assert refused.headers.get("retry-after")


async def test_handler_audit_entries_are_bounded_per_actor_and_minute(store: Store) -> None:
    """A device or trunk repeating a refused request (a forbidden media address) in a loop gets
    at most 30 audit entries a minute; another actor, or the next minute, is not affected."""
    from callgate.clock import ManualClock

    clock = ManualClock()
    edge = SipEdge(CredentialStore(store, REALM), AuditLog(store), clock=clock)
    for _ in range(40):
        await edge.audit("trunk:uk", "sip.media.forbidden", "call:x", {})
    await edge.audit("sip:alice.desk", "sip.media.forbidden", "call:y", {})
    clock.advance(60)
    await edge.audit("trunk:uk", "sip.media.forbidden", "call:z", {})
    entries = AuditLog(store).iter_entries()
    actors = [e.actor for e in entries if e.action == "sip.media.forbidden"]
    assert actors.count("trunk:uk") == 31 and actors.count("sip:alice.desk") == 1

    # a run that straddles a clock minute's boundary gets no second quota: the minute
    # counts from the actor's first entry (callgate/rate.py Window)
    clock.advance(59.5 - clock.monotonic() % 60)
    for _ in range(30):
        await edge.audit("trunk:us", "sip.media.forbidden", "call:a", {})
    clock.advance(1.0)  # past the clock's minute, 1 s into the run's
    for _ in range(30):
        await edge.audit("trunk:us", "sip.media.forbidden", "call:b", {})
    entries = AuditLog(store).iter_entries()
    actors = [e.actor for e in entries if e.action == "sip.media.forbidden"]
    assert actors.count("trunk:us") == 30


async def test_failures_under_a_device_name_do_not_lock_out_its_in_dialog_requests(
    desk: tuple[SipEdge, Credential, str],
) -> None:
    """Six bad digests for the device's name from elsewhere lock its INVITE/REGISTER out, but its
    BYE from the call's address (in_dialog) is still verified and taken: a stranger cannot keep
    a call up by tripping the lockout; a wrong password in a BYE is still refused."""
    edge, device, password = desk
    attacker = Peer("UDP", ("198.51.100.9", 5060), lambda data, target: None)
    phone = Peer("UDP", ("192.0.2.5", 5060), lambda data, target: None)

    def nonce() -> str:
        return current_nonce(edge)

    for _ in range(6):
        await edge.auth.authenticate(register(answer(nonce(), device.username, "x")), attacker)
    good = register(answer(nonce(), device.username, password))
    _, locked = await edge.auth.authenticate(good, phone)
    assert locked is not None and locked.status == 403  # the account rule, from anywhere

    bye = register(answer(nonce(), device.username, password))
    credential, refusal = await edge.auth.authenticate(bye, phone, in_dialog=True)
    assert refusal is None and credential is not None
    wrong = register(answer(nonce(), device.username, "x"))
    credential, refusal = await edge.auth.authenticate(wrong, phone, in_dialog=True)
    assert credential is None and refusal is not None and refusal.status == 401


def test_a_credential_can_require_srtp_and_says_so(store: Store) -> None:
    """`callgate sip add --srtp`: the edge calls that device with SRTP only (runtime/sip_calls.py);
    the flag is kept with the credential and audited with it; others default to plain RTP."""
    credentials = CredentialStore(store, REALM)
    secure, _ = credentials.add("alice", "desk", "test", srtp=True)
    plain, _ = credentials.add("alice", "softphone", "test")
    assert secure.srtp and not plain.srtp
    found = {c.username: c.srtp for c in credentials.list("alice")}
    assert found == {"alice.desk": True, "alice.softphone": False}
    again = credentials.get("alice.desk")
    assert again is not None and again.srtp
    added = [e for e in AuditLog(store).iter_entries() if e.action == "sip.credential.add"]
    assert [json.loads(e.details)["srtp"] for e in added] == [True, False]
