"""Call policy rules: who may call whom, when, and under which constraints (pure, no storage).

A `Policy` is an ordered list of `Rule`s plus a default action. `Policy.decide` evaluates the rules
in `order` (ties broken by `id`); the first rule that matches decides. A rule matches when its
caller party matches the caller, its callee party matches the callee, and (if it has one) its
time window contains the call time converted to the policy's time zone. A `bidirectional` rule also
matches with the roles swapped, so an ethical wall between two groups is a single rule.

Time windows: `days` are weekdays, 0 = Monday .. 6 = Sunday, in the policy's time zone; the window
is half-open, start <= t < end. A window whose end is not after its start crosses midnight: a
window that starts on day D covers D start..24:00 and D+1 00:00..end. So 22:00-06:00 on Friday
covers Friday 23:00 and Saturday 02:00, but not Friday 02:00 (that belongs to Thursday's window).
start == end is a full 24 hours starting at start (00:00-00:00 is the whole day D).

Calls with the phone network (SIP trunks, docs/sip.md): a party that is not a user is a number,
E.164 ("+442079460000"), or "anonymous@TRUNK" for a caller without one. A rule's `direction`
(`internal`, `outbound` to a number, `inbound` from one; `any` by default) narrows which calls it
matches, and a party may be a number prefix (`Party(number="+44")`, or "anonymous"). A decision
tells whether its rule explicitly covers dialling numbers (`Decision.dial_out`): the SIP edge
lets a user dial out only on such a rule or the trunk's dial_out_groups, never on the default.

`Decision.explanation` says, for each rule examined until the match, why it did not match, then
why the deciding rule (or the default) applies; this is what `callgate policy explain` prints.
`decide` uses an index on the caller side, so rules whose caller party cannot match are skipped
without examination (summarised in one line); `explain` examines every rule in order;
`decide(..., explain=False)` returns the same decision with no explanation and formats no text
(the hub's hot path).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callgate.types.decisions import Denial

Action = Literal["allow", "deny"]
ACTIONS: tuple[Action, ...] = ("allow", "deny")
Direction = Literal["any", "internal", "outbound", "inbound"]
DIRECTIONS: tuple[Direction, ...] = ("any", "internal", "outbound", "inbound")
ANONYMOUS = "anonymous"  # a number pattern: callers without a number ("anonymous@TRUNK")
DEFAULT_RULE_ID = "default"  # what a CDR / denial names when no rule matched
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_IndexKey = tuple[str, str]  # ("u", handle) | ("g", group) | ("*", "")
_ANY_KEY: _IndexKey = ("*", "")


@dataclass(frozen=True, slots=True)
class Subject:
    """A party to a call as policy sees it: the user's handle and the groups the user is in."""

    handle: str
    groups: tuple[str, ...] = ()


def is_external(handle: str) -> bool:
    """A party on the phone network: a number or "anonymous@TRUNK" (handles have neither)."""
    return handle.startswith(("+", "tel:")) or "@" in handle


def call_direction(caller: Subject, callee: Subject) -> Direction:
    if is_external(caller.handle):
        return "inbound"
    return "outbound" if is_external(callee.handle) else "internal"


@dataclass(frozen=True, slots=True)
class Party:
    """Which subjects a rule side matches: a user, a group, both (that user, in that group), a
    number prefix (or "anonymous"), or anyone."""

    user: str | None = None
    group: str | None = None
    number: str | None = None

    def __post_init__(self) -> None:
        if self.user == "" or self.group == "":
            raise ValueError("party: user and group must be None or non-empty")
        if self.number is not None and (self.user is not None or self.group is not None):
            raise ValueError("party: a number pattern stands alone (no user or group)")

    def matches(self, subject: Subject) -> bool:
        if self.number is not None:
            return _number_matches(self.number, subject.handle)
        return (self.user is None or subject.handle == self.user) and (
            self.group is None or self.group in subject.groups
        )

    def mismatch(self, role: str, subject: Subject) -> str | None:
        """Why `subject` (in `role`, "caller" or "callee") is not this party; None if it is."""
        if self.number is not None and not _number_matches(self.number, subject.handle):
            return f"{role} {subject.handle} is not {self.describe()}"
        if self.user is not None and subject.handle != self.user:
            return f"{role} {subject.handle} is not user {self.user}"
        if self.group is not None and self.group not in subject.groups:
            return f"{role} {subject.handle} is not in group {self.group}"
        return None

    def describe(self) -> str:
        if self.number == ANONYMOUS:
            return "an anonymous number"
        if self.number is not None:
            return f"number {self.number}…"
        if self.user is not None and self.group is not None:
            return f"user {self.user} in group {self.group}"
        if self.user is not None:
            return f"user {self.user}"
        if self.group is not None:
            return f"group {self.group}"
        return "anyone"

    def index_key(self) -> _IndexKey:
        if self.number is not None:
            return _ANY_KEY  # examined for every caller
        if self.user is not None:
            return ("u", self.user)
        if self.group is not None:
            return ("g", self.group)
        return _ANY_KEY


def _number_matches(pattern: str, handle: str) -> bool:
    if pattern == ANONYMOUS:
        return handle.startswith(ANONYMOUS + "@")
    return handle.startswith(pattern) and is_external(handle)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Weekdays (0 = Mon .. 6 = Sun) and a half-open [start, end) time of day; see the module doc."""

    days: frozenset[int]
    start: dt.time
    end: dt.time

    def __post_init__(self) -> None:
        if not self.days:
            raise ValueError("time window: days must not be empty")
        bad = sorted(d for d in self.days if not (isinstance(d, int) and 0 <= d <= 6))
        if bad:
            raise ValueError(f"time window: days must be 0 (Mon) .. 6 (Sun), got {bad}")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("time window: start and end must be naive (the policy has the zone)")

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def contains(self, local: dt.datetime) -> bool:
        """Whether `local` (already in the policy's time zone) falls within the window."""
        return self.contains_at(local.weekday(), local.time().replace(tzinfo=None))

    def contains_at(self, day: int, t: dt.time) -> bool:
        """Whether weekday `day` (0 = Mon) at local time of day `t` falls within the window."""
        if not self.crosses_midnight:
            return day in self.days and self.start <= t < self.end
        return (day in self.days and t >= self.start) or (
            (day - 1) % 7 in self.days and t < self.end
        )

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        end = f"{self.end:%H:%M}" + (" next day" if self.crosses_midnight else "")
        return f"{days} {self.start:%H:%M}-{end}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy rule; constraints (relay_only, max_duration_s, recording_required) need `allow`."""

    id: str
    order: int
    caller: Party
    callee: Party
    action: Action
    when: TimeWindow | None = None
    relay_only: bool = False
    max_duration_s: int | None = None
    recording_required: bool = False
    reason: str = ""
    bidirectional: bool = False
    direction: Direction = "any"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"rule {self.id!r}: direction must be one of {', '.join(DIRECTIONS)}")
        if not self.id or self.id != self.id.strip():
            raise ValueError(f"rule id {self.id!r}: must be non-empty without surrounding spaces")
        if self.id == DEFAULT_RULE_ID:
            raise ValueError(f"rule id {self.id!r} is reserved for the default action")
        if self.action not in ACTIONS:
            raise ValueError(
                f"rule {self.id!r}: action must be 'allow' or 'deny', got {self.action!r}"
            )
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(
                f"rule {self.id!r}: max_duration_s must be positive, got {self.max_duration_s}"
            )
        if self.action == "deny" and (
            self.relay_only or self.max_duration_s is not None or self.recording_required
        ):
            raise ValueError(
                f"rule {self.id!r}: relay_only, max_duration_s and recording_required "
                "only apply to allow rules"
            )

    def _label(self) -> str:
        return f"rule {self.id} (order {self.order})"

    def _parties(self) -> str:
        arrow = "<->" if self.bidirectional else "->"
        return f"{self.caller.describe()} {arrow} {self.callee.describe()}"

    @property
    def dial_out(self) -> bool:
        """Does this rule speak of calls to numbers explicitly?"""
        return self.direction == "outbound" or self.callee.number is not None

    def matches(self, caller: Subject, callee: Subject, day: int, t: dt.time) -> bool:
        """Whether the rule applies (no explanation; the fast path of `Policy.decide`)."""
        if self.direction != "any" and call_direction(caller, callee) != self.direction:
            return False
        if not (self.caller.matches(caller) and self.callee.matches(callee)) and not (
            self.bidirectional and self.callee.matches(caller) and self.caller.matches(callee)
        ):
            return False
        return self.when is None or self.when.contains_at(day, t)

    def examine(
        self, caller: Subject, callee: Subject, local: dt.datetime, zone: str
    ) -> tuple[bool, str]:
        """Whether the rule matches, and one line of explanation saying why (not)."""
        flow = call_direction(caller, callee)
        if self.direction != "any" and flow != self.direction:
            return False, f"{self._label()}: no match, the call is {flow}, not {self.direction}"
        why_not = self._party_mismatch(caller, callee)
        if why_not is not None:
            return False, f"{self._label()} [{self._parties()}]: no match, {why_not}"
        at = f"{DAY_NAMES[local.weekday()]} {local:%Y-%m-%d %H:%M} {zone}"
        if self.when is not None and not self.when.contains(local):
            return False, f"{self._label()}: no match, {at} is outside {self.when.describe()}"
        direction = "" if self._forward(caller, callee) else " (reverse direction)"
        window = f", {at} is within {self.when.describe()}" if self.when is not None else ""
        return True, (
            f"{self._label()}: matches{direction}, caller {caller.handle} is "
            f"{self.caller.describe() if direction == '' else self.callee.describe()}, "
            f"callee {callee.handle} is "
            f"{self.callee.describe() if direction == '' else self.caller.describe()}"
            f"{window} -> {self.action}{self._constraints()}"
        )

    def _forward(self, caller: Subject, callee: Subject) -> bool:
        return (
            self.caller.mismatch("caller", caller) is None
            and self.callee.mismatch("callee", callee) is None
        )

    def _party_mismatch(self, caller: Subject, callee: Subject) -> str | None:
        forward = self.caller.mismatch("caller", caller) or self.callee.mismatch("callee", callee)
        if forward is None or not self.bidirectional:
            return forward
        reverse = self.callee.mismatch("caller", caller) or self.caller.mismatch("callee", callee)
        if reverse is None:
            return None
        return f"neither direction: {forward}; reversed, {reverse}"

    def _constraints(self) -> str:
        parts = []
        if self.relay_only:
            parts.append("relay only")
        if self.max_duration_s is not None:
            parts.append(f"max {self.max_duration_s} s")
        if self.recording_required:
            parts.append("recording required")
        return f" ({', '.join(parts)})" if parts else ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one call attempt; `rule_id` None means the default action applied."""

    action: Action
    rule_id: str | None
    relay_only: bool = False
    max_duration_s: int | None = None
    recording_required: bool = False
    reason: str = ""
    explanation: list[str] = field(default_factory=list)
    dial_out: bool = False  # the deciding rule speaks of calls to numbers (Rule.dial_out)

    @property
    def allowed(self) -> bool:
        return self.action == "allow"


@dataclass(frozen=True, slots=True)
class Policy:
    """Ordered rules, a default action and the time zone time windows are read in."""

    rules: Sequence[Rule]
    default_action: Action = "allow"
    timezone: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _ordered: tuple[Rule, ...] = field(init=False, repr=False, compare=False)
    _index: dict[_IndexKey, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        object.__setattr__(self, "rules", rules)
        if self.default_action not in ACTIONS:
            raise ValueError(
                f"policy: default_action must be 'allow' or 'deny', got {self.default_action!r}"
            )
        object.__setattr__(self, "_zone", _zone(self.timezone))
        first_at: dict[str, int] = {}
        for position, rule in enumerate(rules):
            if rule.id in first_at:
                raise ValueError(
                    f"policy: duplicate rule id {rule.id!r} "
                    f"(rules at positions {first_at[rule.id]} and {position})"
                )
            first_at[rule.id] = position
        ordered = tuple(sorted(rules, key=lambda r: (r.order, r.id)))
        object.__setattr__(self, "_ordered", ordered)
        buckets: dict[_IndexKey, list[int]] = {}
        for rank, rule in enumerate(ordered):
            keys = {rule.caller.index_key()}
            if rule.bidirectional:
                keys.add(rule.callee.index_key())
            for key in keys:
                buckets.setdefault(key, []).append(rank)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in buckets.items()})

    @property
    def ordered_rules(self) -> tuple[Rule, ...]:
        """The rules in evaluation order: by `order`, ties by `id`."""
        return self._ordered

    def decide(
        self, caller: Subject, callee: Subject, at: dt.datetime, *, explain: bool = True
    ) -> Decision:
        """The decision for `caller` calling `callee` at `at` (timezone-aware).

        With `explain=False` the explanation is left empty and no text is formatted: the same
        decision, about twice as fast (what the hub needs before ringing; CDRs store the rule id).
        """
        candidates = self._candidates(caller)
        if not explain:
            return self._decide_quiet(caller, callee, at, candidates)
        skipped = len(self._ordered) - len(candidates)
        return self._evaluate(caller, callee, at, candidates, skipped)

    def explain(self, caller: Subject, callee: Subject, at: dt.datetime) -> Decision:
        """Like `decide`, but examines every rule in order, so each one before the match is listed."""
        return self._evaluate(caller, callee, at, range(len(self._ordered)), 0)

    def _candidates(self, caller: Subject) -> Sequence[int]:
        index = self._index
        lists = [index.get(("u", caller.handle), ()), index.get(_ANY_KEY, ())]
        lists.extend(index.get(("g", group), ()) for group in caller.groups)
        present = [ranks for ranks in lists if ranks]
        if len(present) == 1:
            return present[0]
        return sorted({rank for ranks in present for rank in ranks})

    def _decide_quiet(
        self, caller: Subject, callee: Subject, at: dt.datetime, ranks: Sequence[int]
    ) -> Decision:
        local = self._local(at)
        day, t = local.weekday(), local.time().replace(tzinfo=None)
        ordered = self._ordered
        for rank in ranks:
            rule = ordered[rank]
            if rule.matches(caller, callee, day, t):
                return _rule_decision(rule, [])
        return self._default_decision([])

    def _local(self, at: dt.datetime) -> dt.datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"policy: time {at.isoformat()} must be timezone-aware")
        return at.astimezone(self._zone)

    def _default_decision(self, explanation: list[str]) -> Decision:
        return Decision(
            action=self.default_action,
            rule_id=None,
            reason="" if self.default_action == "allow" else "denied by default policy",
            explanation=explanation,
        )

    def _evaluate(
        self,
        caller: Subject,
        callee: Subject,
        at: dt.datetime,
        ranks: Sequence[int],
        skipped: int,
    ) -> Decision:
        local = self._local(at)
        explanation: list[str] = []
        if skipped:
            explanation.append(
                f"{skipped} rule(s) not examined: their caller side names another user or a "
                f"group {caller.handle} is not in"
            )
        for rank in ranks:
            rule = self._ordered[rank]
            matched, line = rule.examine(caller, callee, local, self.timezone)
            explanation.append(line)
            if matched:
                return _rule_decision(rule, explanation)
        explanation.append(f"no rule matched: default action {self.default_action}")
        return self._default_decision(explanation)


def _rule_decision(rule: Rule, explanation: list[str]) -> Decision:
    return Decision(
        action=rule.action,
        rule_id=rule.id,
        relay_only=rule.relay_only,
        max_duration_s=rule.max_duration_s,
        recording_required=rule.recording_required,
        reason=rule.reason,
        explanation=explanation,
        dial_out=rule.dial_out,
    )


def to_denial(decision: Decision) -> Denial | None:
    """What the hub passes to `CallEngine.invite`: None when the call is allowed."""
    if decision.action == "allow":
        return None
    rule = decision.rule_id if decision.rule_id is not None else DEFAULT_RULE_ID
    return Denial(rule=rule, reason=decision.reason or "denied by policy")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"policy: unknown time zone {name!r}") from exc
