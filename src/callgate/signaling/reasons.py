"""End reasons, CDR dispositions and who ended a call (docs/signaling.md, "Call state machine").

One table maps each reason to its disposition; three reasons depend on whether the call had been
answered. The storage layer uses `disposition_for()` too when it closes calls left open by a
server that died (`server-restart`).
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    UNKNOWN_USER = "unknown-user"
    OFFLINE = "offline"
    BUSY = "busy"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    NO_ANSWER = "no-answer"
    ANSWERED_ELSEWHERE = "answered-elsewhere"  # to the other ringing devices; the call goes on
    HANGUP = "hangup"
    CALLER_DISCONNECTED = "caller-disconnected"
    CALLEE_DISCONNECTED = "callee-disconnected"
    SETUP_FAILED = "setup-failed"
    MEDIA_LOST = "media-lost"
    SERVER_RESTART = "server-restart"
    POLICY_DENIED = "policy-denied"
    ENDED_BY_ADMIN = "ended-by-admin"  # an administrator ended the live call (admin API)
    MAX_DURATION = "max-duration"  # the allowing policy rule's max_duration_s was reached
    # The call must be recorded (policy) and the recorder could not start: nobody was rung.
    RECORDING_UNAVAILABLE = "recording-unavailable"
    RECORDING_FAILED = "recording-failed"  # the recording stopped being written mid-call
    # Several nodes: the node holding the call died and no party re-attached within the lease
    # (docs/scaling.md); a surviving node finalized the record.
    NODE_LOST = "node-lost"
    # A SIP party (docs/sip.md, "Hold and session refresh"): it held the call longer than
    # `calls.max_hold_s`, or its session timer ran out without a refresh (RFC 4028 §10).
    # No ACK came for our 2xx to its re-INVITE (RFC 3261 §13.3.1.4): the party is gone.
    HOLD_TIMEOUT = "hold-timeout"
    SESSION_EXPIRED = "session-expired"
    PARTY_LOST = "party-lost"


class Disposition(enum.StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    REJECTED = "rejected"
    DENIED = "denied"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Party(enum.StrEnum):
    CALLER = "caller"
    CALLEE = "callee"


class EndedBy(enum.StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    SERVER = "server"


_FIXED: dict[Reason, Disposition] = {
    Reason.UNKNOWN_USER: Disposition.FAILED,
    Reason.OFFLINE: Disposition.FAILED,
    Reason.BUSY: Disposition.BUSY,
    Reason.REJECTED: Disposition.REJECTED,
    Reason.CANCELLED: Disposition.CANCELLED,
    Reason.NO_ANSWER: Disposition.NO_ANSWER,
    Reason.HANGUP: Disposition.ANSWERED,
    Reason.SETUP_FAILED: Disposition.FAILED,
    Reason.MEDIA_LOST: Disposition.ANSWERED,
    Reason.POLICY_DENIED: Disposition.DENIED,
    Reason.MAX_DURATION: Disposition.ANSWERED,
    Reason.RECORDING_UNAVAILABLE: Disposition.FAILED,
    Reason.HOLD_TIMEOUT: Disposition.ANSWERED,  # (only answered calls are held or refreshed)
    Reason.SESSION_EXPIRED: Disposition.ANSWERED,
    Reason.PARTY_LOST: Disposition.ANSWERED,
}
# reason → (disposition if answered, disposition if not)
_BY_ANSWER: dict[Reason, tuple[Disposition, Disposition]] = {
    Reason.CALLER_DISCONNECTED: (Disposition.ANSWERED, Disposition.CANCELLED),
    Reason.CALLEE_DISCONNECTED: (Disposition.ANSWERED, Disposition.FAILED),
    Reason.SERVER_RESTART: (Disposition.ANSWERED, Disposition.FAILED),
    Reason.ENDED_BY_ADMIN: (Disposition.ANSWERED, Disposition.CANCELLED),
    Reason.RECORDING_FAILED: (Disposition.ANSWERED, Disposition.FAILED),
    Reason.NODE_LOST: (Disposition.ANSWERED, Disposition.FAILED),
}


def disposition_for(reason: Reason, answered: bool) -> Disposition:
    """The CDR disposition of a call that ended for `reason`."""
    if reason in _BY_ANSWER:
        if_answered, if_not = _BY_ANSWER[reason]
        return if_answered if answered else if_not
    if reason in _FIXED:
        return _FIXED[reason]
    raise ValueError(f"{reason} does not end a call")
