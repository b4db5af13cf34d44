"""The monitor's findings in the database (SQLite and PostgreSQL): counters add up across updates
and restarts, a finding is fresh when new or back after a silence, and fresh unsanctioned findings
are audited in the same transaction."""

from __future__ import annotations

import json

from callgate.detect.live.monitor import Change
from callgate.detect.report import Session
from callgate.records.audit import AuditLog
from callgate.records.findings import REAPPEAR_S, FindingRepository
from callgate.storage.db import Store
from callgate.storage.models import from_unix

T0 = 1_780_000_000.0


def change(first: float, last: float, packets: int, *, sanctioned: bool = False,
           app: str = "Skype (classic peer-to-peer)", targets: tuple[str, ...] = ("udp/*",),
           ) -> Change:  # fmt: skip
    session = Session("10.1.2.3", app, "198.51.100.7", sanctioned, first, last,
                      packets, packets, packets * 100, packets * 100, confidence=0.8,
                      paths=["p2p"], protocols=["Skype"], evidence=["framing"])  # fmt: skip
    return Change(session, packets, packets, packets * 100, packets * 100, targets)


def test_findings_add_up_and_fresh_ones_are_audited(store: Store) -> None:
    repo, audit = FindingRepository(store), AuditLog(store)
    versions = [repo.version()]  # what the console's long polls compare: changes with each write
    fresh = repo.record("eth0", [change(T0, T0 + 5, 10), change(T0, T0 + 5, 4, sanctioned=True)])
    versions.append(repo.version())
    assert [(r.app, r.sanctioned) for r in fresh] == [
        ("Skype (classic peer-to-peer)", False),
        ("Skype (classic peer-to-peer)", True),
    ]
    # the same session grew (or the server restarted and saw more of it): added, not fresh
    assert repo.record("eth0", [change(T0 + 1, T0 + 60, 5, targets=("tcp/443",))]) == []
    versions += [repo.version(), repo.version()]
    assert len(set(versions)) == 3 and versions[-1] == versions[-2]  # stable while unchanged
    (row,) = repo.recent(unsanctioned_only=True)
    assert (row.packets_out, row.bytes_in, row.path) == (15, 1500, "p2p")
    assert row.first_seen.timestamp() == T0 and row.last_seen.timestamp() == T0 + 60
    assert row.protocols == ["Skype"] and row.interface == "eth0"
    assert row.targets == ["tcp/443", "udp/*"]  # the union of what the session used
    assert repo.block_targets() == [("198.51.100.7", ["tcp/443", "udp/*"])]  # unsanctioned only
    # back after a silence longer than REAPPEAR_S: another call, fresh again
    later = T0 + 60 + REAPPEAR_S + 1
    (again,) = repo.record("eth0", [change(later, later + 3, 2)])
    assert again.id == row.id and again.packets_out == 17
    entries = [e for e in audit.iter_entries() if e.action == "detect.finding"]
    assert len(entries) == 2  # the unsanctioned finding, twice; the sanctioned one never
    assert entries[0].actor == "monitor" and entries[0].object == "host:10.1.2.3"
    assert json.loads(entries[0].details)["peer"] == "198.51.100.7"
    assert [r.sanctioned for r in repo.recent()] == [False, True]  # most recent first


def test_findings_not_seen_since_the_cutoff_are_purged_and_audited(store: Store) -> None:
    repo, audit = FindingRepository(store), AuditLog(store)
    repo.record("eth0", [change(T0, T0 + 5, 10), change(T0 + 1000, T0 + 2000, 3, app="Zoom")])
    before = repo.version()
    assert repo.purge(from_unix(T0 + 100)) == 1  # the first one was last seen at T0 + 5
    assert repo.version() != before
    assert [row.app for row in repo.recent()] == ["Zoom"]
    assert repo.purge(from_unix(T0 + 100)) == 0
    (entry,) = [e for e in audit.iter_entries() if e.action == "detect.purge"]
    assert (entry.actor, json.loads(entry.details)["deleted"]) == ("monitor", 1)
