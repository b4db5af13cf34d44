"""Ring groups: a call to a group of users rings every member's devices at once (docs/sip.md,
"Trunks (inbound)": a DID may ring a group). The call engine rings them
(`CallEngine.invite_group`); this module says who may be rung and under which constraints.

The policy is asked about each member as if the caller called that member alone, so every
existing rule applies unchanged (inbound screening by the caller's number, rules naming a
member or a member's group). Members it denies do not ring; when it denies every member the
call is denied, naming the first member's rule (members in handle order). The call's grant is
the strictest of the members' grants: relay-only if any is, the shortest `max_duration_s`,
recording required if any requires it (the call is then anchored and recorded whoever
answers, as a call to one user is: signaling/anchoring.py), and the rule named in the record
is the first recording one, else the first member's — until a member answers: the record then
names the rule that allows calling that member (`member_rules`).

A group rings at most `MAX_MEMBERS` users by default (sip.ring_group_max_members): each member
costs a presence lookup, a policy decision and an SDP offer per carrier call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from callgate.types.decisions import Denial, Grant

MAX_MEMBERS = 50  # the default of sip.ring_group_max_members
PREFIX = "group:"  # handles never hold ":", so a group's record callee is never a user


def group_callee(group: str) -> str:
    """The callee a group's call is recorded with until a member answers."""
    return PREFIX + group


Verdict = tuple[Denial | None, Grant | None]


def group_verdict(
    members: Sequence[str], verdicts: Mapping[str, Verdict]
) -> tuple[tuple[str, ...], Denial | None, Grant | None]:
    """(the members that may be rung, the call's denial, the call's grant) from each member's
    verdict; `verdicts` holds one for every member."""
    ordered = sorted(members)
    allowed = tuple(h for h in ordered if verdicts[h][0] is None)
    if ordered and not allowed:
        return (), verdicts[ordered[0]][0], None
    grants = [g for h in allowed if (g := verdicts[h][1]) is not None]
    if not grants:
        return allowed, None, None
    recording = [g for g in grants if g.recording_required]
    durations = [g.max_duration_s for g in grants if g.max_duration_s is not None]
    grant = Grant(
        rule=(recording or grants)[0].rule,
        relay_only=any(g.relay_only for g in grants),
        max_duration_s=min(durations) if durations else None,
        recording_required=bool(recording),
    )
    return allowed, None, grant


def member_rules(allowed: Sequence[str], verdicts: Mapping[str, Verdict]) -> dict[str, str | None]:
    """Each member that may be rung -> the rule that allows calling it (None: no policy)."""
    return {h: (g.rule if (g := verdicts[h][1]) is not None else None) for h in allowed}


def too_large(group: str, size: int, limit: int) -> Denial | None:
    """The refusal of a call to a group over the size limit, else None."""
    if size <= limit:
        return None
    reason = (
        f"ring group {group!r} has {size} members, over the limit of {limit} "
        "(sip.ring_group_max_members)"
    )
    return Denial(rule=TOO_LARGE, reason=reason)


TOO_LARGE = "ring-group-size"  # the record's policy_rule for a call to a group over the limit
