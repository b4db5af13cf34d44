"""What a plain user may see of the other party of their own call (issue 12 item 5).

A call record holds both parties' network identity: IP address, device id, user agent, and the
client address of their relay sessions. Admin and compliance see all of it; a plain user sees
their own side and only the other party's handle — relay-only exists to hide the other party's
address, and the record must not give it back. The other party's relay sessions are left out,
and so are the other party's fields in the call's audit events (their details, not the entries:
an entry's hash covers its full details, which only admin and compliance can read and verify).
"""

from __future__ import annotations

from typing import TypeVar

from callgate.accounts.records import UserRecord
from callgate.api.deps import READERS
from callgate.api.schemas import CallOut
from callgate.api.schemas_records import AuditEntryOut, RelaySessionOut

PARTY_FIELDS = ("address", "device", "user_agent")
Call = TypeVar("Call", bound=CallOut)


def _other_side(viewer: UserRecord, call: CallOut) -> str | None:
    """ "caller" or "callee": the side whose identity `viewer` may not see; None: sees all."""
    if viewer.role in READERS:
        return None
    return "callee" if viewer.handle == call.caller_user else "caller"


def call_view(viewer: UserRecord, call: Call) -> Call:
    side = _other_side(viewer, call)
    if side is None:
        return call
    return call.model_copy(update={f"{side}_{field}": None for field in PARTY_FIELDS})


def sessions_view(
    viewer: UserRecord, call: CallOut, sessions: list[RelaySessionOut]
) -> list[RelaySessionOut]:
    if _other_side(viewer, call) is None:
        return sessions
    return [session for session in sessions if session.user == viewer.handle]


def events_view(
    viewer: UserRecord, call: CallOut, events: list[AuditEntryOut]
) -> list[AuditEntryOut]:
    side = _other_side(viewer, call)
    if side is None:
        return events
    hidden = {f"{side}_{field}" for field in PARTY_FIELDS}
    return [
        event.model_copy(
            update={"details": {k: v for k, v in event.details.items() if k not in hidden}}
        )
        for event in events
    ]
