"""Response bodies of the records, audit, live-call, retention and stats endpoints (/api)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from callgate.api.schemas import CallOut
from callgate.records.audit_chain import Entry, parse_details


class CdrOut(CallOut):
    end_detail: str | None
    audit_index: int | None
    legal_hold: bool


class CdrPage(BaseModel):
    items: list[CdrOut]
    next_cursor: str | None


class QualityOut(BaseModel):
    id: int
    call_id: str
    reporter: str
    direction: str
    kind: str
    packets: int
    packets_lost: int
    loss_rate: float
    jitter_ms: float | None
    rtt_ms: float | None
    concealed_ratio: float | None
    mos: float
    classification: str
    poor_reasons: list[str]
    reported_at: datetime
    final: bool

    @classmethod
    def of(cls, row: Any) -> QualityOut:
        data = {name: getattr(row, name) for name in cls.model_fields if name != "poor_reasons"}
        return cls(**data, poor_reasons=json.loads(row.poor_reasons or "[]"))


class QualityPage(BaseModel):
    items: list[QualityOut]
    next_cursor: str | None


class RelaySessionOut(BaseModel):
    id: int
    allocation_id: str
    user: str
    username: str
    transport: str
    client: str
    relay: str
    server: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    lifetime: int
    peers: list[str]
    packets_to_peer: int
    bytes_to_peer: int
    packets_to_client: int
    bytes_to_client: int

    @classmethod
    def of(cls, row: Any) -> RelaySessionOut:
        def hostport(ip: str, port: int) -> str:
            return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

        return cls(
            id=row.id,
            allocation_id=row.allocation_id,
            user=row.user,
            username=row.username,
            transport=row.transport,
            client=hostport(row.client_ip, row.client_port),
            relay=hostport(row.relay_ip, row.relay_port),
            server=hostport(row.server_ip, row.server_port),
            started_at=row.started_at,
            ended_at=row.ended_at,
            end_reason=row.end_reason,
            lifetime=row.lifetime,
            peers=json.loads(row.peers or "[]"),
            packets_to_peer=row.packets_to_peer,
            bytes_to_peer=row.bytes_to_peer,
            packets_to_client=row.packets_to_client,
            bytes_to_client=row.bytes_to_client,
        )


class RelaySessionPage(BaseModel):
    items: list[RelaySessionOut]
    next_cursor: str | None


class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    object: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, entry: Entry) -> AuditEntryOut:
        return cls(
            seq=entry.seq,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            object=entry.object,
            details=parse_details(entry.details),
            prev_hash=entry.prev_hash,
            hash=entry.hash,
        )


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class CdrDetail(BaseModel):
    cdr: CdrOut
    quality: list[QualityOut]
    relay_sessions: list[RelaySessionOut]
    events: list[AuditEntryOut]


class HoldOut(BaseModel):
    call_id: str
    legal_hold: bool


class LiveCallOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    call_id: str
    caller: str
    callee: str
    state: str = Field(description="ringing | connecting | connected")
    invited_at: datetime
    answered_at: datetime | None
    duration_s: float
    media_path: str | None
    relay: str | None
    trunk: str | None = Field(default=None, description="a call to a number: its SIP trunk")
    quality: str | None = None


class LiveCallsOut(BaseModel):
    calls: list[LiveCallOut]


class EndCallOut(BaseModel):
    call_id: str
    ended: bool


class CheckpointOut(BaseModel):
    id: int
    size: int
    head_hash: str
    key_id: str
    created_at: datetime
    note: str


class CheckpointsOut(BaseModel):
    checkpoints: list[CheckpointOut]


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None
    message: str
    seconds: float


class RetentionBody(BaseModel):
    """Days each record class is kept (null: forever). Audit entries are not deleted yet
    (docs/admin-api.md, "Retention")."""

    model_config = ConfigDict(extra="forbid")

    cdr_days: int | None = Field(default=None, ge=1, le=36500)
    quality_days: int | None = Field(default=None, ge=1, le=36500)
    audit_days: int | None = Field(default=None, ge=1, le=36500)


class PurgeOut(BaseModel):
    cdr: int
    quality: int
    audit: int
    held_calls_kept: int


class HourCalls(BaseModel):
    hour: datetime
    answered: int
    failed: int
    denied: int


class HourBytes(BaseModel):
    hour: datetime
    bytes: int


class StatsSummary(BaseModel):
    hours: int
    calls_per_hour: list[HourCalls]
    answered: int
    failed: int
    denied: int
    poor_rate: float | None
    relay_bytes_per_hour: list[HourBytes]
    live_calls: int


class RelayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    listen: list[str]
    allocations: int
    allocations_total: int
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    auth_failures: int
    quota_rejections: int


class RelaysOut(BaseModel):
    relays: list[RelayOut]
