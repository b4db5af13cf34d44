"""Why a policy or group change was refused (the API maps them to 422, 404 and 409).

PolicyError (CallgateError)
├── InvalidPolicyValue   a field is not acceptable (ValueError)        → 422
├── UnknownPolicyObject  no such rule or group (LookupError)           → 404
└── PolicyConflict       a name is taken, a group is still used, …     → 409
"""

from __future__ import annotations

from callgate.errors import CallgateError


class PolicyError(CallgateError):
    """A policy or group change was refused; the message says why."""


class InvalidPolicyValue(PolicyError, ValueError):
    """A rule, group or setting field is not acceptable."""


class UnknownPolicyObject(PolicyError, LookupError):
    """No rule or group by that id or name."""


class PolicyConflict(PolicyError):
    """The change conflicts with what is stored (a taken name, a group rules still use)."""
