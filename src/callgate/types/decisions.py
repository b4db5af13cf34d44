"""A call policy's decision on one call attempt, as value types: the policy layer makes them
(policy/rules.py, policy/store.py), call control acts on them (signaling/engine.py) and the
records keep them (the CDR's policy columns, the audit's call.denied)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Denial:
    """Policy refused the call before ringing: `rule` names the rule, `reason` is for people."""

    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class Grant:
    """Policy allowed the call: which rule ("default" when none matched) and its constraints."""

    rule: str
    relay_only: bool = False
    max_duration_s: int | None = None
    recording_required: bool = False
