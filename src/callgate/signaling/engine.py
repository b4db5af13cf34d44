"""The server-owned call state machine: pure, no I/O, on an injectable clock.

`CallEngine` takes already-parsed inputs (a device connected, a request arrived, time passed) and
returns the effects to carry out, in order (see `effects.py`). Every request gets exactly one reply,
`ack` or `error` with its id. Within one input's effects, records come before messages.

Each request handler reads: validate → authorize → act → respond. Authorization: a device whose
user is not a party of the call gets `not-found` (existence is not leaked); a party's device that
is not the one carrying the call for its side, or a request the call's state does not allow, gets
`conflict`.

The engine is composed of one class per stage of a call, each in its module over the shared
tables and lookups of `EngineBase` (engine_base.py): ringing.py (invites, one user's or a ring
group's), answering.py (answer, reject, hang up), media_reports.py (candidates, media, stats) and
reattaching.py (a call outliving its node).
"""

from __future__ import annotations

from callgate.signaling.answering import Answering
from callgate.signaling.media_reports import MediaReports
from callgate.signaling.reattaching import Reattaching
from callgate.signaling.ringing import Ringing

__all__ = ["CallEngine"]


class CallEngine(Ringing, Answering, MediaReports, Reattaching):
    """The call state machine: every request handler, the queries and the timer (see above)."""
