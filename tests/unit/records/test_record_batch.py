"""A records batch (records/record_batch.py) sends its CDR writes together, then its audit
entries under the appenders' lock: the rows and the chain are those writing one by one gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callgate.clock import ManualClock
from callgate.records.audit import AuditLog
from callgate.records.call_recorder import CallEnd, CallRecorder
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.records.cdr_types import new_call_id
from callgate.records.quality_store import QualityRepository
from callgate.records.record_batch import record_batch
from callgate.storage.db import Store

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_one_batch_keeps_each_calls_order_and_the_chain_in_queue_order(store: Store) -> None:
    cdrs = CdrRepository(store, ManualClock(start_wall=T0.timestamp()), node_id="a")
    log = AuditLog(store)
    log.append("admin", "user.update", "user:x")  # the chain does not start with the batch
    first, second, taken = new_call_id(), new_call_id(), new_call_id()
    cdrs.open(CallOpen(taken, "carol", "dave", T0, node_id="a"))
    # another node took `taken` over (its node was thought dead): a's finalize must not count
    assert CdrRepository(store, node_id="b").take_over(taken, "a", silent_since=at(3600))
    with store.engine.begin() as conn, record_batch(conn, cdrs) as batch:
        for call_id, caller in ((first, "alice"), (second, "erin")):
            batch.cdr.open(CallOpen(call_id, caller, "bob", T0, node_id="a"))
            batch.audit((caller, "call.invite", f"call:{call_id}", None), T0, index_of=call_id)
        batch.cdr.update(first, {"answer_at": at(1), "codec": "opus"})
        batch.audit(("bob", "call.answered", f"call:{first}", None), at(1))
        # an append made in place meanwhile comes after what the batch holds
        AuditLog.append_in(conn, "admin", "policy.settings", "settings", None, at(1))
        done = batch.cdr.finalize(first, at(5), "answered", "caller", "hangup", 4.0, None)
        batch.audit(("alice", "call.ended", f"call:{first}", None), at(5), only_if=done)
        lost = batch.cdr.finalize(taken, at(5), "failed", "server", "timeout", None, None)
        batch.audit(("system", "call.ended", f"call:{taken}", None), at(5), only_if=lost)
        batch.cdr.finalize(second, at(6), "no-answer", "server", "timeout", None, "x")
    assert (done.value, lost.value) == (True, False)
    entries = [(e.seq, e.action, e.object) for e in log.iter_entries()]
    assert entries == [
        (1, "user.update", "user:x"),
        (2, "call.invite", f"call:{first}"),
        (3, "call.invite", f"call:{second}"),
        (4, "call.answered", f"call:{first}"),
        (5, "policy.settings", "settings"),
        (6, "call.ended", f"call:{first}"),
    ]
    assert log.verify(None).ok
    one, two, other = (cdrs.get(c) for c in (first, second, taken))
    assert one is not None and two is not None and other is not None
    assert (one.audit_index, one.codec, one.disposition, one.duration_s) == (
        2,
        "opus",
        "answered",
        4.0,
    )
    assert (two.audit_index, two.disposition, two.end_detail) == (3, "no-answer", "x")
    assert (other.node_id, other.end_at) == ("b", None)  # b's call, still open


def test_a_failed_batch_writes_nothing(store: Store) -> None:
    cdrs = CdrRepository(store)
    log = AuditLog(store)
    call_id = new_call_id()
    with pytest.raises(RuntimeError), store.engine.begin() as conn, record_batch(conn, cdrs) as b:
        b.cdr.open(CallOpen(call_id, "alice", "bob", T0))
        b.audit(("alice", "call.invite", f"call:{call_id}", None), T0, index_of=call_id)
        raise RuntimeError("a write of the batch failed")
    assert (cdrs.get(call_id), log.size()) == (None, 0)


def test_two_nodes_recorders_write_every_record_of_many_calls(store: Store) -> None:
    """Two nodes' recorders (writer threads) at once, batches as they come: every CDR finalized
    with its audit index, three entries per call, the chain gap-free and verified."""
    clock = ManualClock(start_wall=T0.timestamp())
    nodes = ("n1", "n2")
    cdrs = {node: CdrRepository(store, clock, node_id=node) for node in nodes}
    recorders = {
        node: CallRecorder(cdrs[node], QualityRepository(store.sessions)) for node in nodes
    }
    calls: list[str] = []
    try:
        for n in range(60):
            node, call_id = nodes[n % 2], new_call_id()
            recorder = recorders[node]
            opened = CallOpen(call_id, f"u{n}", "bob", T0, caller_device="d1", node_id=node)
            recorder.open(opened, ringing_devices=1, relay_only=False)
            recorder.answered(call_id, "bob", "d2", at(1), answer_at=at(1))
            recorder.ended(CallEnd(call_id, at(3), "answered", "hangup", "caller", f"u{n}", 2.0))
            calls.append(call_id)
        for recorder in recorders.values():
            recorder.settled().result(timeout=60)
    finally:
        for recorder in recorders.values():
            recorder.close()
    log = AuditLog(store)
    entries = list(log.iter_entries())
    assert [e.seq for e in entries] == list(range(1, 3 * len(calls) + 1))
    assert log.verify(None).ok
    invites = {e.object: e.seq for e in entries if e.action == "call.invite"}
    for call_id in calls:
        record = cdrs["n1"].get(call_id)
        assert record is not None and record.disposition == "answered"
        assert record.audit_index == invites[f"call:{call_id}"]
