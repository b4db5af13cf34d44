"""The edge's audit quota per actor and action without sockets: full of live windows, a new
actor evicts the oldest window only — a flooder's spent quota is not reset by it."""

from __future__ import annotations

from callgate.clock import ManualClock
from callgate.sip.edge_audit import HANDLER_AUDITS, MAX_COUNTED, EdgeAudit

ACTION = "sip.media_refused"


def test_a_full_table_forgets_its_oldest_window_not_every_actors_count() -> None:
    clock = ManualClock()
    audit = EdgeAudit(None, clock, lambda work: None)
    admits = audit._admits
    for i in range(MAX_COUNTED - 2):
        assert admits(f"sip:phone{i}", ACTION)
    for _ in range(HANDLER_AUDITS):
        assert admits("sip:flooder", ACTION)
    assert not admits("sip:flooder", ACTION)  # quota spent
    clock.advance(1.0)
    assert admits("sip:late", ACTION)  # the last window the table holds
    assert admits("sip:later", ACTION)  # one more: phone0's window (the oldest) goes
    assert not admits("sip:flooder", ACTION)  # still over its quota
    assert admits("sip:phone1", ACTION)  # the others keep counting
    assert audit._windows[("sip:phone1", ACTION)].count == 2
    assert ("sip:phone0", ACTION) not in audit._windows
    assert len(audit._windows) == MAX_COUNTED
