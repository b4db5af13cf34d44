"""The editable shape of rules, groups and settings: validation and conversion.

A `RuleSpec` is what an admin writes (API body, CLI options); `RuleView` is a stored rule (a spec
plus id, position and times). `to_rule` turns a view into the pure `policy.rules.Rule` the
decision code evaluates; its id is "<id>:<name>", which is what a CDR's `policy_rule` and a
`call.denied` message's `rule` carry ("default" when no rule matched).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callgate.policy.errors import InvalidPolicyValue
from callgate.policy.rules import (
    ACTIONS,
    ANONYMOUS,
    DAY_NAMES,
    DIRECTIONS,
    Action,
    Direction,
    Party,
    Rule,
    TimeWindow,
)

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
HANDLE_RE = re.compile(r"[a-z0-9._-]{1,64}")
NUMBER_RE = re.compile(
    r"\+[0-9]{0,15}"
)  # an E.164 prefix (ASCII digits): "+" alone is every number
TIME_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
MAX_DURATION_S = 7 * 86400
MAX_REASON_CHARS = 255
_DAY_BY_NAME = {name.lower(): index for index, name in enumerate(DAY_NAMES)}


def check_name(value: str, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidPolicyValue(f"{what} must be 1-64 of A-Z a-z 0-9 . _ -, got {value!r}")
    return value


def _optional(value: Any, pattern: re.Pattern[str], what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidPolicyValue(f"{what}: not a valid name: {value!r}")
    return value


def parse_days(value: Any) -> tuple[int, ...] | None:
    """Weekdays as 0 (Mon) .. 6 (Sun), from numbers or names ("mon", "Mon-Fri", "sat,sun")."""
    if value is None or value == "" or value == []:
        return None
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    days: set[int] = set()
    for item in items:
        days.update(_day_items(item))
    return tuple(sorted(days))


def _day_items(item: Any) -> Iterable[int]:
    if isinstance(item, bool):
        raise InvalidPolicyValue(f"days: not a weekday: {item!r}")
    if isinstance(item, int):
        if not 0 <= item <= 6:
            raise InvalidPolicyValue(f"days: {item} is not 0 (Mon) .. 6 (Sun)")
        return (item,)
    text = str(item).strip().lower()
    if "-" in text:
        first, _, last = text.partition("-")
        start, end = _day(first), _day(last)
        return [(start + i) % 7 for i in range((end - start) % 7 + 1)]
    return (_day(text),)


def _day(text: str) -> int:
    if text.isdigit() and int(text) <= 6:
        return int(text)
    day = _DAY_BY_NAME.get(text[:3]) if len(text) >= 3 else None
    if day is None or not DAY_NAMES[day].lower().startswith(text[:3]):
        raise InvalidPolicyValue(f"days: not a weekday: {text!r} (use mon..sun or 0..6)")
    return day


def parse_time(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not TIME_RE.fullmatch(value):
        raise InvalidPolicyValue(f"{what} must be HH:MM (00:00-23:59), got {value!r}")
    return value


def check_time_zone(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidPolicyValue(f"time_zone: not an IANA time zone: {value!r}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidPolicyValue(f"time_zone: unknown IANA time zone {value!r}") from None
    return value


def check_action(value: Any, what: str = "action") -> Action:
    if value not in ACTIONS:
        raise InvalidPolicyValue(f"{what} must be 'allow' or 'deny', got {value!r}")
    return "allow" if value == "allow" else "deny"


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as an admin writes it. Party fields None = anyone; days None = every day; no
    window = all day. `wall` matches both directions (an ethical wall is one deny rule)."""

    name: str
    action: Action
    enabled: bool = True
    caller_user: str | None = None
    caller_group: str | None = None
    callee_user: str | None = None
    callee_group: str | None = None
    days: tuple[int, ...] | None = None
    window_start: str | None = None
    window_end: str | None = None
    wall: bool = False
    relay_only: bool = False
    max_duration_s: int | None = None
    recording_required: bool = False
    reason: str = ""
    direction: Direction = "any"
    caller_number: str | None = None  # E.164 prefix, or "anonymous"
    callee_number: str | None = None  # E.164 prefix

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> RuleSpec:
        """From the JSON shape (`as_json`): validate every field, with a precise message."""
        caller = _party(data.get("caller"), "caller")
        callee = _party(data.get("callee"), "callee")
        window = data.get("window")
        if window is not None and not isinstance(window, Mapping):
            raise InvalidPolicyValue("window must be {start, end} or null")
        window = window or {}
        spec = cls(
            name=check_name(data.get("name", ""), "name"),
            action=check_action(data.get("action")),
            enabled=_bool(data.get("enabled", True), "enabled"),
            caller_user=_optional(caller.get("user"), HANDLE_RE, "caller.user"),
            caller_group=_optional(caller.get("group"), NAME_RE, "caller.group"),
            callee_user=_optional(callee.get("user"), HANDLE_RE, "callee.user"),
            callee_group=_optional(callee.get("group"), NAME_RE, "callee.group"),
            days=parse_days(data.get("days")),
            window_start=parse_time(window.get("start"), "window.start"),
            window_end=parse_time(window.get("end"), "window.end"),
            wall=_bool(data.get("wall", False), "wall"),
            relay_only=_bool(data.get("relay_only", False), "relay_only"),
            max_duration_s=_duration(data.get("max_duration_s")),
            recording_required=_bool(data.get("recording_required", False), "recording_required"),
            reason=_reason(data.get("reason", "")),
            direction=check_direction(data.get("direction", "any")),
            caller_number=_number(caller.get("number"), "caller.number", anonymous=True),
            callee_number=_number(callee.get("number"), "callee.number"),
        )
        spec.check()
        return spec

    def check(self) -> None:
        for side, number, user, group in (
            ("caller", self.caller_number, self.caller_user, self.caller_group),
            ("callee", self.callee_number, self.callee_user, self.callee_group),
        ):
            if number is not None and (user is not None or group is not None):
                raise InvalidPolicyValue(
                    f"{side}: a number pattern stands alone (no user or group)"
                )
        if (self.window_start is None) != (self.window_end is None):
            raise InvalidPolicyValue("window needs both start and end (HH:MM), or neither")
        if self.action == "deny" and (
            self.relay_only or self.max_duration_s is not None or self.recording_required
        ):
            raise InvalidPolicyValue(
                "relay_only, max_duration_s and recording_required only apply to allow rules"
            )

    def as_json(self) -> dict[str, Any]:
        window = (
            {"start": self.window_start, "end": self.window_end}
            if self.window_start is not None
            else None
        )
        return {
            "name": self.name,
            "action": self.action,
            "enabled": self.enabled,
            "caller": {
                "user": self.caller_user,
                "group": self.caller_group,
                "number": self.caller_number,
            },
            "callee": {
                "user": self.callee_user,
                "group": self.callee_group,
                "number": self.callee_number,
            },
            "direction": self.direction,
            "days": list(self.days) if self.days is not None else None,
            "window": window,
            "wall": self.wall,
            "relay_only": self.relay_only,
            "max_duration_s": self.max_duration_s,
            "recording_required": self.recording_required,
            "reason": self.reason,
        }

    def columns(self) -> dict[str, Any]:
        """The policy_rules column values."""
        values = asdict(self)
        values["days"] = ",".join(str(d) for d in self.days) if self.days is not None else None
        return values


@dataclass(frozen=True, slots=True)
class RuleView:
    """A stored rule."""

    id: int
    position: int
    spec: RuleSpec
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def label(self) -> str:
        """The pure rule's id, and what CDRs and `call.denied` name: "<id>:<name>"."""
        return f"{self.id}:{self.spec.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "position": self.position,
            **self.spec.as_json(),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }

    def to_rule(self) -> Rule:
        spec = self.spec
        when = None
        if spec.days is not None or spec.window_start is not None:
            when = TimeWindow(
                days=frozenset(spec.days if spec.days is not None else range(7)),
                start=dt.time.fromisoformat(spec.window_start or "00:00"),
                end=dt.time.fromisoformat(spec.window_end or "00:00"),
            )
        return Rule(
            id=self.label,
            order=self.position,
            caller=Party(spec.caller_user, spec.caller_group, spec.caller_number),
            callee=Party(spec.callee_user, spec.callee_group, spec.callee_number),
            action=spec.action,
            when=when,
            relay_only=spec.relay_only,
            max_duration_s=spec.max_duration_s,
            recording_required=spec.recording_required,
            reason=spec.reason,
            bidirectional=spec.wall,
            direction=spec.direction,
        )


def rule_spec_from_row(row: Any) -> RuleSpec:
    return RuleSpec(
        name=row.name,
        action=check_action(row.action),
        enabled=bool(row.enabled),
        caller_user=row.caller_user,
        caller_group=row.caller_group,
        callee_user=row.callee_user,
        callee_group=row.callee_group,
        days=tuple(int(d) for d in row.days.split(",")) if row.days else None,
        window_start=row.window_start,
        window_end=row.window_end,
        wall=bool(row.wall),
        relay_only=bool(row.relay_only),
        max_duration_s=row.max_duration_s,
        recording_required=bool(row.recording_required),
        reason=row.reason or "",
        direction=check_direction(row.direction or "any"),
        caller_number=row.caller_number,
        callee_number=row.callee_number,
    )


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A group's editable fields; TURN settings None = the server-wide setting applies."""

    name: str
    description: str = ""
    turn_max_allocations: int | None = None
    turn_max_kbps: int | None = None
    turn_peer_ranges: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> GroupSpec:
        return cls(
            name=check_name(data.get("name", ""), "group name"),
            description=_description(data.get("description", "")),
            turn_max_allocations=_limit(data.get("turn_max_allocations"), "turn_max_allocations"),
            turn_max_kbps=_limit(data.get("turn_max_kbps"), "turn_max_kbps"),
            turn_peer_ranges=_ranges(data.get("turn_peer_ranges") or ()),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "turn_max_allocations": self.turn_max_allocations,
            "turn_max_kbps": self.turn_max_kbps,
            "turn_peer_ranges": list(self.turn_peer_ranges),
        }


GROUP_FIELDS = frozenset(GroupSpec.__dataclass_fields__)


def _party(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or set(value) - {"user", "group", "number"}:
        raise InvalidPolicyValue(f"{what} must be {{user?, group?, number?}} or null")
    return value


def check_direction(value: Any) -> Direction:
    for direction in DIRECTIONS:
        if value == direction:
            return direction
    raise InvalidPolicyValue(f"direction must be one of {', '.join(DIRECTIONS)}, got {value!r}")


def _number(value: Any, what: str, anonymous: bool = False) -> str | None:
    if value is None or value == "":
        return None
    if anonymous and value == ANONYMOUS:
        return ANONYMOUS
    if not isinstance(value, str) or not NUMBER_RE.fullmatch(value):
        also = ' or "anonymous"' if anonymous else ""
        raise InvalidPolicyValue(
            f"{what} must be an E.164 prefix (+ and digits){also}, got {value!r}"
        )
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidPolicyValue(f"{what} must be true or false, got {value!r}")
    return value


def _duration(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DURATION_S:
        raise InvalidPolicyValue(
            f"max_duration_s must be a whole number of seconds 1..{MAX_DURATION_S}, got {value!r}"
        )
    return value


def _limit(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000_000:
        raise InvalidPolicyValue(
            f"{what} must be a whole number 0..10000000 or null, got {value!r}"
        )
    return value


def _reason(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_REASON_CHARS or not value.isprintable():
        raise InvalidPolicyValue(f"reason must be at most {MAX_REASON_CHARS} printable characters")
    return value


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 255 or not value.isprintable():
        raise InvalidPolicyValue("description must be at most 255 printable characters")
    return value


def _ranges(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidPolicyValue("turn_peer_ranges must be a list of CIDR strings")
    ranges = []
    for item in value:
        try:
            ranges.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise InvalidPolicyValue(f"turn_peer_ranges: not a CIDR range: {item!r}") from None
    return tuple(ranges)


def _iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
