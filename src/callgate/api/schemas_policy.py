"""Request and response bodies of /api/groups and /api/policy (docs/policy.md).

Pydantic checks types and sizes; the meaning (names, weekdays, HH:MM, allow-only constraints) is
checked by `policy.specs`, whose message becomes the 422 detail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=64)]
Day = Annotated[int, Field(ge=0, le=6)]
HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Limit = Annotated[int, Field(ge=0, le=10_000_000)]


class Party(BaseModel):
    """A side of a rule: a user, a group, both (that user, in that group), or a number prefix
    (docs/sip.md, "Policy for numbers"); all null = anyone."""

    model_config = ConfigDict(extra="forbid")

    user: Name | None = None
    group: Name | None = None
    number: str | None = Field(
        default=None,
        max_length=16,
        description='E.164 prefix ("+44"), or "anonymous" for callers without a number',
    )


class Window(BaseModel):
    """Half-open [start, end) local time; end <= start crosses midnight into the next day."""

    model_config = ConfigDict(extra="forbid")

    start: HHMM
    end: HHMM


class RuleIn(BaseModel):
    """POST /api/policy/rules, PUT /api/policy/rules/{id} (a PUT replaces every field)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    action: Literal["allow", "deny"]
    enabled: bool = True
    caller: Party = Field(default_factory=Party)
    callee: Party = Field(default_factory=Party)
    days: list[Day] | None = Field(default=None, max_length=7, description="0 = Mon .. 6 = Sun")
    window: Window | None = None
    wall: bool = Field(default=False, description="ethical wall: matches both directions")
    relay_only: bool = False
    max_duration_s: int | None = Field(default=None, ge=1, le=7 * 86400)
    recording_required: bool = False
    reason: str = Field(default="", max_length=255)
    direction: Literal["any", "internal", "outbound", "inbound"] = Field(
        default="any", description="outbound: to numbers; inbound: from them"
    )
    position: int | None = Field(
        default=None, ge=1, le=1_000_000, description="POST only: where to insert (default: last)"
    )


class RuleOut(BaseModel):
    id: int
    position: int
    name: str
    action: Literal["allow", "deny"]
    enabled: bool
    caller: Party
    callee: Party
    days: list[int] | None
    window: Window | None
    wall: bool
    relay_only: bool
    max_duration_s: int | None
    recording_required: bool
    reason: str
    direction: Literal["any", "internal", "outbound", "inbound"]
    created_at: datetime
    updated_at: datetime


class PolicyOut(BaseModel):
    default_action: Literal["allow", "deny"]
    time_zone: str
    version: int
    rules: list[RuleOut]


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_action: Literal["allow", "deny"] | None = None
    time_zone: str | None = Field(default=None, min_length=1, max_length=64)


class SettingsOut(BaseModel):
    default_action: Literal["allow", "deny"]
    time_zone: str


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=1, le=1_000_000)


class ExplainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caller: Name
    callee: Name
    at: datetime | None = Field(
        default=None, description="ISO 8601; without an offset: in the policy's time zone"
    )


class Constraints(BaseModel):
    relay_only: bool
    max_duration_s: int | None
    recording_required: bool


class ExplainOut(BaseModel):
    decision: Literal["allow", "deny"]
    rule_id: int | None
    rule_name: str | None
    reason: str
    constraints: Constraints
    at: datetime
    time_zone: str
    trace: list[str]


class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: str = Field(default="", max_length=255)
    turn_max_allocations: Limit | None = None
    turn_max_kbps: Limit | None = None
    turn_peer_ranges: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=64
    )


class GroupPatch(BaseModel):
    """PATCH /api/groups/{name}: only the fields given change (null clears a TURN setting)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=255)
    turn_max_allocations: Limit | None = None
    turn_max_kbps: Limit | None = None
    turn_peer_ranges: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=64
    )


class GroupOut(BaseModel):
    name: str
    description: str
    members: list[str]
    turn_max_allocations: int | None
    turn_max_kbps: int | None
    turn_peer_ranges: list[str]


class GroupsOut(BaseModel):
    groups: list[GroupOut]
