"""`policy explain`: which rule decides a call between two users at a time, and why — one JSON
shape for the API (POST /api/policy/explain) and the CLI, and its text form."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from callgate.policy.rules import DEFAULT_RULE_ID
from callgate.policy.store import PolicyStore


def resolve_at(at: dt.datetime | None, time_zone: str, now: float) -> dt.datetime:
    """`at` as an aware datetime: a naive one is read in the policy's time zone; None is now."""
    if at is None:
        return dt.datetime.fromtimestamp(now, dt.UTC)
    if at.tzinfo is None or at.utcoffset() is None:
        return at.replace(tzinfo=ZoneInfo(time_zone))
    return at


def explain(
    policy: PolicyStore, caller: str, callee: str, at: dt.datetime | None, now: float
) -> dict[str, Any]:
    """The decision, its rule (id and name; None for the default), constraints and the trace."""
    settings = policy.settings()
    when = resolve_at(at, settings.time_zone, now)
    decision, disabled = policy.explain(caller, callee, when)
    rule_id: int | None = None
    rule_name: str | None = None
    if decision.rule_id is not None and decision.rule_id != DEFAULT_RULE_ID:
        number, _, rule_name = decision.rule_id.partition(":")
        rule_id = int(number)
    return {
        "decision": decision.action,
        "rule_id": rule_id,
        "rule_name": rule_name,
        "reason": decision.reason,
        "constraints": {
            "relay_only": decision.relay_only,
            "max_duration_s": decision.max_duration_s,
            "recording_required": decision.recording_required,
        },
        "at": when.isoformat(),
        "time_zone": settings.time_zone,
        "trace": [*decision.explanation, *disabled],
    }


def render(result: dict[str, Any], caller: str, callee: str) -> str:
    """The text `callgate policy explain` prints."""
    rule = (
        f"rule {result['rule_id']} ({result['rule_name']})"
        if result["rule_id"] is not None
        else "the default action (no rule matched)"
    )
    lines = [
        f"{caller} -> {callee} at {result['at']} ({result['time_zone']}): "
        f"{result['decision'].upper()} by {rule}",
    ]
    if result["reason"]:
        lines.append(f"reason: {result['reason']}")
    constraints = result["constraints"]
    applied = [
        text
        for text, on in (
            ("relay only", constraints["relay_only"]),
            (f"max {constraints['max_duration_s']} s", constraints["max_duration_s"] is not None),
            ("recording required", constraints["recording_required"]),
        )
        if on
    ]
    if applied:
        lines.append(f"constraints: {', '.join(applied)}")
    lines.append("why:")
    lines.extend(f"  {line}" for line in result["trace"])
    return "\n".join(lines)
