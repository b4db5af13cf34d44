"""party_view: a plain user's view of their own call leaves out the other party's relay sessions
and network identity; admin and compliance see everything (issue 12 item 5)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callgate.accounts.records import UserRecord
from callgate.api.party_view import call_view, events_view, sessions_view
from callgate.api.schemas import CallOut
from callgate.api.schemas_records import AuditEntryOut, RelaySessionOut

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def user(handle: str, role: str = "user") -> UserRecord:
    return UserRecord(1, handle, handle, (), "callgate", role == "admin", False, True, T0, T0, role)


CALL = CallOut.model_construct(
    call_id="c1", caller_user="alice", caller_address="10.0.0.5", caller_device="d-a",
    caller_user_agent="ua-a", callee_user="bob", callee_address="10.0.0.6", callee_device="d-b",
    callee_user_agent="ua-b",
)  # fmt: skip


def session(owner: str, client: str) -> RelaySessionOut:
    return RelaySessionOut.model_construct(user=owner, client=client)


def test_each_party_loses_the_other_sides_identity_and_sessions() -> None:
    sessions = [session("alice", "10.0.0.5:5000"), session("bob", "10.0.0.6:6000")]
    event = AuditEntryOut.model_construct(
        details={"caller": "alice", "caller_address": "10.0.0.5", "callee_device": "d-b"}
    )
    bob = call_view(user("bob"), CALL)
    assert (bob.caller_address, bob.caller_device, bob.caller_user_agent) == (None, None, None)
    assert (bob.callee_address, bob.callee_device) == ("10.0.0.6", "d-b")
    assert [s.user for s in sessions_view(user("bob"), CALL, sessions)] == ["bob"]
    (seen,) = events_view(user("bob"), CALL, [event])
    assert seen.details == {"caller": "alice", "callee_device": "d-b"}
    alice = call_view(user("alice"), CALL)
    assert alice.callee_address is None and alice.caller_address == "10.0.0.5"
    assert [s.user for s in sessions_view(user("alice"), CALL, sessions)] == ["alice"]


@pytest.mark.parametrize("role", ["admin", "compliance"])
def test_readers_see_everything(role: str) -> None:
    reader = user("root", role)
    sessions = [session("alice", "10.0.0.5:5000"), session("bob", "10.0.0.6:6000")]
    assert call_view(reader, CALL) is CALL
    assert sessions_view(reader, CALL, sessions) == sessions
