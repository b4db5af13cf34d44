"""Each device's INVITE rate at the edge (sip/invite_limits.py), with a real store (SQLite) and
digest, without sockets: a flood of INVITEs from one device reaches the call handler (which
writes a call record for each, as a refused dial-out does) only BURST times; the rest get
`503` with Retry-After, no record, and one `sip.invite.limit` audit entry a run."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from callgate.accounts.service import AccountService
from callgate.clock import ManualClock
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.sip.attempts import Attempts
from callgate.sip.credentials import CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.invite_limits import BURST
from callgate.sip.message import SipRequest, parse_datagram
from callgate.sip.transport import Peer
from callgate.storage.db import open_store, sqlite_url

REALM = "callgate.test"
URI = "sip:bob@callgate.test"


def invite(n: int, username: str, password: str, nonce: str) -> SipRequest:
    ha1 = hashlib.sha256(f"{username}:{REALM}:{password}".encode()).hexdigest()
    ha2 = hashlib.sha256(f"INVITE:{URI}".encode()).hexdigest()
    digest = hashlib.sha256(f"{ha1}:{nonce}:00000001:c:auth:{ha2}".encode()).hexdigest()
    authorization = (
        f'Digest username="{username}", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
        f'response="{digest}", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="c"'
    )
    data = (
        f"INVITE {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK{n}\r\n"
        f"From: <sip:{username}@callgate.test>;tag=1\r\nTo: <{URI}>\r\nCall-ID: flood-{n}\r\n"
        f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:{username}@192.0.2.5>\r\n"
        f"Authorization: {authorization}\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_datagram(data.encode())
    assert isinstance(message, SipRequest)
    return message


class Refusing:
    """A call handler that writes a record for each call and refuses it (a dial-out over the
    user's share does both)."""

    def __init__(self) -> None:
        self.records = 0

    async def invite(self, call: InboundCall) -> None:
        self.records += 1
        call.reject(403, "Forbidden (test)")


async def test_a_flood_of_invites_from_one_device_writes_a_bounded_number_of_records(
    tmp_path: Path,
) -> None:
    store = open_store(sqlite_url(tmp_path))
    try:
        AccountService(store, REALM).create_user("alice", None, (), None)
        credentials = CredentialStore(store, REALM)
        device, password = credentials.add("alice", "desk", "test")
        clock = ManualClock()
        audit = AuditLog(store)
        edge = SipEdge(
            credentials, audit, clock=clock, attempts=Attempts(CdrRepository(store), audit, clock)
        )
        handler = Refusing()
        edge.take_calls(handler)
        peer = Peer("UDP", ("192.0.2.5", 5060), lambda data, target: None)

        def nonce() -> str:
            return edge.digest.challenges(clock.wall())[0].split('nonce="')[1].split('"')[0]

        async def flood(first: int, count: int) -> list[int]:
            replies = []
            for n in range(first, first + count):
                reply = await edge._invite(invite(n, device.username, password, nonce()), peer)
                assert reply is not None
                if reply.status == 503:
                    assert reply.headers.get("retry-after") == "1"
                replies.append(reply.status)
            await asyncio.sleep(0.2)
            while edge._tasks:
                await asyncio.gather(*edge._tasks)
            return replies

        replies = await flood(0, 3 * BURST)
        assert replies == [403] * BURST + [503] * (2 * BURST)
        assert handler.records == BURST and edge.invite_limits.refused == 2 * BURST
        clock.advance(1.0)  # one token back: one more call, then a new run of refusals
        assert await flood(100, 3) == [403, 503, 503]
        actions = [e.action for e in AuditLog(store).iter_entries()]
        assert actions.count("sip.invite.limit") == 2  # once a run
        assert actions.count("sip.call.refused") == BURST + 1  # the handler's refusals only
        cdrs = CdrRepository(store).list(limit=500)
        assert len(cdrs) == BURST + 1
    finally:
        store.close()
