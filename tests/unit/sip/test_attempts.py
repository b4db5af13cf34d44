"""Records of INVITEs the edge refuses itself (SQLite store, manual clock): a challenge that is
never answered becomes a CDR after the hold, one that is answered does not, refusals are
recorded at once with their audit entry, and a flood from one address is counted, not written."""

from __future__ import annotations

from pathlib import Path

from callgate.clock import ManualClock
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.sip.attempts import HOLD, PER_ADDRESS, Attempts, describe
from callgate.sip.message import SipRequest, parse_datagram
from callgate.storage.db import open_store, sqlite_url


def invite(call_id: str, user: str = "mallory") -> SipRequest:
    data = (
        "INVITE sip:+442071234567@callgate.test SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.7;branch=z9hG4bKa\r\n"
        f"From: <sip:{user}@evil.example>;tag=1\r\nTo: <sip:+442071234567@callgate.test>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        "User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_datagram(data.encode())
    assert isinstance(message, SipRequest)
    return message


def test_refused_and_unanswered_invites_get_records_floods_are_counted(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    try:
        clock = ManualClock()
        cdrs, audit = CdrRepository(store), AuditLog(store)
        attempts = Attempts(cdrs, audit, clock)
        source = "203.0.113.7"

        # challenged twice: one answers (the hub records that attempt), one never does
        attempts.challenged("a", describe(invite("a"), source, 401, "Unauthorized", clock.wall()))
        attempts.challenged("b", describe(invite("b"), source, 401, "Unauthorized", clock.wall()))
        attempts.authenticated("a")
        assert attempts.due() == []
        clock.advance(HOLD + 1)
        (unanswered,) = attempts.due()
        attempts.record(unanswered)
        # refused outright
        attempts.record(describe(invite("c"), source, 488, "Not Acceptable Here", clock.wall()))

        rows = cdrs.list()
        assert [(r.reason, r.disposition, r.direction) for r in rows] == [
            ("sip 488", "failed", "inbound"),
            ("sip 401", "denied", "inbound"),
        ]
        row = rows[1]
        assert (row.caller_user, row.callee_user) == (f"sip:mallory@{source}", "+442071234567")
        assert (row.caller_address, row.caller_user_agent) == (source, "friendly-scanner")
        entries = [e for e in audit.recent() if e.action == "sip.call.refused"]
        assert sorted(e.object for e in entries) == sorted(f"call:{r.call_id}" for r in rows)
        assert {r.audit_index for r in rows} == {e.seq for e in entries}

        # a flood: past PER_ADDRESS a minute only counted, with one flood entry
        for n in range(PER_ADDRESS + 5):
            attempts.record(describe(invite(f"f{n}"), source, 403, "Forbidden", clock.wall()))
        assert len(cdrs.list(limit=1000)) == PER_ADDRESS  # 2 before + 28 more this minute
        assert attempts.unrecorded == 7
        assert [e.action for e in audit.recent()].count("sip.call.flood") == 1
    finally:
        store.close()
