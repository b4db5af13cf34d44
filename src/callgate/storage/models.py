"""Database models (SQLAlchemy 2, typed). Portable types only: the same tables on SQLite and
PostgreSQL (tests run both)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the offset; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Primary key of the high-volume tables: 64-bit on PostgreSQL (BIGSERIAL: no int4 overflow after
# 2**31 rows), INTEGER on SQLite (its one autoincrementing type, 64-bit already).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_unix(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Base(DeclarativeBase):
    pass


class TurnUser(Base):
    """A static TURN user: only the key MD5(name:realm:password) is kept, never the password."""

    __tablename__ = "turn_users"
    __table_args__ = (UniqueConstraint("name", "realm", name="uq_turn_users_name_realm"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    realm: Mapped[str] = mapped_column(String(255))
    key_hex: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RelaySession(Base):
    """One TURN allocation: who, from where, which relay address, peers and traffic each way."""

    __tablename__ = "relay_sessions"
    __table_args__ = (UniqueConstraint("allocation_id", name="uq_relay_sessions_allocation_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    allocation_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(513))
    user: Mapped[str] = mapped_column(String(513), index=True)
    client_ip: Mapped[str] = mapped_column(String(45))
    client_port: Mapped[int] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(8))
    relay_ip: Mapped[str] = mapped_column(String(45))
    relay_port: Mapped[int] = mapped_column(Integer)
    server_ip: Mapped[str] = mapped_column(String(45))
    server_port: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lifetime: Mapped[int] = mapped_column(Integer)
    # JSON array of peer IP strings, sorted (Text keeps it portable).
    peers: Mapped[str] = mapped_column(Text, default="[]")
    packets_to_peer: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_to_peer: Mapped[int] = mapped_column(BigInteger, default=0)
    packets_to_client: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_to_client: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # the relay that wrote it (its node or relay id; None for a node alone): see v0025
    relay_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class User(Base):
    """An account: signs in with an argon2id-hashed password (no password, nor anything else derived
    from it, is kept); it reaches the relay only with TURN REST credentials handed out in `hello`."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("handle", name="uq_users_handle"),
        UniqueConstraint("source", "external_id", name="uq_users_source_external_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handle: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(255))
    # JSON array of group names (Text keeps it portable).
    groups: Mapped[str] = mapped_column(Text, default="[]")
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    realm: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)  # always role == "admin"
    # admin | compliance | security | user (accounts/records.py ROLES); is_admin is kept equal
    # to role == "admin".
    role: Mapped[str] = mapped_column(String(16), default="user")
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Where the account comes from: "local" (password here), "ldap" or "oidc" (callgate.identity);
    # external_id is the directory's stable id (LDAP entryUUID/objectGUID, OIDC "iss sub").
    source: Mapped[str] = mapped_column(String(16), default="local")
    external_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)


class ApiToken(Base):
    """A bearer token: only SHA-256(token) is kept; the token itself is shown once, to its owner."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("users.id", name="fk_api_tokens_user_id", ondelete="CASCADE"),
        index=True,
    )
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Call(Base):
    """The CDR: one row per call attempt, inserted before anyone rings, finalized at the end."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("call_id", name="uq_calls_call_id"),
        Index("ix_calls_caller_user_invite_at", "caller_user", "invite_at"),
        Index("ix_calls_callee_user_invite_at", "callee_user", "invite_at"),
        Index("ix_calls_end_at", "end_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(32))
    caller_user: Mapped[str] = mapped_column(String(64))
    caller_device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    caller_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    caller_user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    callee_user: Mapped[str] = mapped_column(String(255))
    callee_device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callee_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callee_user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    direction: Mapped[str] = mapped_column(String(16), default="internal")
    invite_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ring_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    answer_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # caller | callee | server, or "admin:<handle>" when an administrator ended the call.
    ended_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The callee's reject reason or the policy's words, as given (truncated to 255).
    end_detail: Mapped[str | None] = mapped_column(String(255), nullable=True)
    policy_rule: Mapped[str | None] = mapped_column(String(255), nullable=True)
    policy_decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    media_path: Mapped[str | None] = mapped_column(String(32), nullable=True)
    relay_used: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # JSON list of "ip:port" relay candidates in the call's offer and answer (relay linking).
    relay_candidates: Mapped[str | None] = mapped_column(Text, nullable=True)
    relay_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    relay_allocation_ids: Mapped[str | None] = mapped_column(Text, nullable=True)
    codec: Mapped[str | None] = mapped_column(String(64), nullable=True)
    encryption: Mapped[str | None] = mapped_column(String(16), nullable=True)
    recording_ids: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The policy rule that allowed the call asked for recording (stored; recording comes later).
    recording_required: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # The media went through the server's anchor (a recorded call), not end to end.
    anchored: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    audit_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The last heartbeat while the call was live (records/heartbeat.py): after a crash, the
    # next start ends the record there.
    last_alive_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Recording(Base):
    """A compliance recording of one call (recording/): where its chunks are, its wrapped key,
    its state (open, closed, failed, interrupted) and, once closed, its SHA-256 and metadata."""

    __tablename__ = "recordings"
    __table_args__ = (
        Index("ix_recordings_call_id", "call_id"),
        Index("ix_recordings_started_at", "started_at"),
        Index("ix_recordings_retain_until", "retain_until"),
    )

    recording_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    file_name: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))
    wrapped_key: Mapped[str] = mapped_column(String(64))
    codec: Mapped[str] = mapped_column(String(32))
    policy_rule: Mapped[str | None] = mapped_column(String(255), nullable=True)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failure: Mapped[str | None] = mapped_column(String(255), nullable=True)
    metadata_json: Mapped[str] = mapped_column(Text)
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Retention and legal hold (migration 0017, recording/retention.py): not deleted before
    # retain_until, nor while held (here, on its call, or on a party of its call).
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The WORM copy (recording/archive.py): bucket, object key prefix, JSON {name: version id}.
    archive_bucket: Mapped[str | None] = mapped_column(String(63), nullable=True)
    archive_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    archive_versions: Mapped[str | None] = mapped_column(Text, nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The S3 legal hold the archive server confirmed on those versions (mirrors any hold that
    # keeps the recording; the archive run sets and lifts it).
    archive_hold: Mapped[bool] = mapped_column(Boolean, default=False)


class Group(Base):
    """A named group of users (membership: users.groups) with its per-group TURN settings."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("name", name="uq_groups_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255), default="")
    turn_max_allocations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    turn_max_kbps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # JSON array of CIDR strings the members' allocations may also reach (Text keeps it portable).
    turn_peer_ranges: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PolicyRule(Base):
    """One ordered allow/deny rule (policy/rules.py has the semantics)."""

    __tablename__ = "policy_rules"
    __table_args__ = (UniqueConstraint("name", name="uq_policy_rules_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(8))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    caller_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    caller_group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callee_user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    callee_group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    days: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "0,1,2,3,4"; 0 = Mon
    window_start: Mapped[str | None] = mapped_column(String(5), nullable=True)  # "HH:MM"
    window_end: Mapped[str | None] = mapped_column(String(5), nullable=True)
    wall: Mapped[bool] = mapped_column(Boolean, default=False)
    relay_only: Mapped[bool] = mapped_column(Boolean, default=False)
    max_duration_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recording_required: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(String(255), default="")
    # calls with the phone network (migration 0024): "any", "internal", "outbound", "inbound",
    # and E.164 prefixes (or "anonymous") for parties that are numbers
    direction: Mapped[str] = mapped_column(String(8), default="any", server_default="any")
    caller_number: Mapped[str | None] = mapped_column(String(16), nullable=True)
    callee_number: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PolicySettings(Base):
    """The single row (id 1): default action, time zone, and a version bumped by every change."""

    __tablename__ = "policy_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    default_action: Mapped[str] = mapped_column(String(8))
    time_zone: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CallQuality(Base):
    """One stream direction as one party saw it; upserted on every `call.stats` report."""

    __tablename__ = "call_quality"
    __table_args__ = (
        UniqueConstraint("call_id", "reporter", "direction", "kind", name="uq_call_quality_stream"),
        Index("ix_call_quality_reported_at", "reported_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(32), index=True)
    reporter: Mapped[str] = mapped_column(String(8))
    direction: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(8))
    packets: Mapped[int] = mapped_column(BigInteger)
    packets_lost: Mapped[int] = mapped_column(BigInteger)
    loss_rate: Mapped[float] = mapped_column(Float)
    jitter_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    rtt_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    concealed_ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    mos: Mapped[float] = mapped_column(Float)
    classification: Mapped[str] = mapped_column(String(8))
    poor_reasons: Mapped[str] = mapped_column(Text, default="[]")
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    final: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEntry(Base):
    """One audit log entry; hash = SHA-256(prev_hash ‖ canonical JSON) (records/audit_chain.py)."""

    __tablename__ = "audit_entries"
    # the legal-hold watcher's newest-entry-of-an-action query (migration 0028)
    __table_args__ = (Index("ix_audit_entries_action_seq", "action", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(255))
    # Canonical JSON object (Text keeps it portable).
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed checkpoint (size, head hash) of the audit log, as a C2SP-style signed note."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    signed_note: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StorageProbe(Base):
    """One row (id 1) that `serve`'s write probe updates every few seconds (storage/health.py)."""

    __tablename__ = "storage_probe"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    written_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RetentionSetting(Base):
    """How many days one record class (cdr, quality, audit) is kept; absent or NULL = forever."""

    __tablename__ = "retention_settings"

    record_class: Mapped[str] = mapped_column(String(16), primary_key=True)
    days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DetectionFinding(Base):
    """Real-time traffic of one internal host with one peer for one application, seen by the
    monitor inside `serve` (docs/detection.md, "Inside serve"): first and last seen, volume, and
    whether it went through our own relays. Counters add up across restarts."""

    __tablename__ = "detect_findings"
    __table_args__ = (
        UniqueConstraint("host", "app", "peer", "sanctioned", name="uq_detect_findings_key"),
        Index("ix_detect_findings_last_seen", "last_seen"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(45))
    app: Mapped[str] = mapped_column(String(128))
    peer: Mapped[str] = mapped_column(String(45))
    sanctioned: Mapped[bool] = mapped_column(Boolean)
    interface: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    packets_out: Mapped[int] = mapped_column(BigInteger, default=0)
    packets_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    path: Mapped[str] = mapped_column(String(16))
    # JSON arrays (Text keeps it portable): protocols and evidence as the detector gave them.
    protocols: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text)
    # JSON array of what a block list needs: "udp/3478" (a relay's or server's port), "udp/*"
    # (a peer-to-peer peer, any port); detect/nftables.py `findings_ruleset`
    targets: Mapped[str] = mapped_column(Text, default="[]")


class DetectionFindingsVersion(Base):
    """One row (id 1): a counter bumped in the same transaction as every write to
    detect_findings, what the console's long polls compare (records/findings.py `version`)."""

    __tablename__ = "detect_findings_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ScimUser(Base):
    """A user provisioned over SCIM (callgate.identity.scim_*): its SCIM id and document next to
    the account it drives (users.source = "scim"). `user_name_key` is userName lower-cased:
    userName is unique without regard to case (RFC 7643 §4.1.1)."""

    __tablename__ = "scim_users"
    __table_args__ = (
        UniqueConstraint("user_name_key", name="uq_scim_users_user_name_key"),
        UniqueConstraint("user_id", name="uq_scim_users_user_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # SCIM id (a UUID)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", name="fk_scim_users_user_id", ondelete="CASCADE")
    )
    user_name_key: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    document: Mapped[str] = mapped_column(Text)  # the SCIM resource as JSON, without id/meta
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScimGroup(Base):
    """A group provisioned over SCIM; its name maps to callgate groups and roles by
    `[identity.scim]` group_map / role_map, like a directory group."""

    __tablename__ = "scim_groups"
    __table_args__ = (UniqueConstraint("display_name_key", name="uq_scim_groups_display_name_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name_key: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    document: Mapped[str] = mapped_column(Text)  # without id, meta and members
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScimMember(Base):
    """One member (a SCIM user) of a SCIM group."""

    __tablename__ = "scim_members"

    group_id: Mapped[str] = mapped_column(
        String(36),
        ForeignKey("scim_groups.id", name="fk_scim_members_group_id", ondelete="CASCADE"),
        primary_key=True,
    )
    user_id: Mapped[str] = mapped_column(
        String(36),
        ForeignKey("scim_users.id", name="fk_scim_members_user_id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )


class SipCredential(Base):
    """A SIP device's digest credential (docs/sip.md): only H(username:realm:password) for each
    digest algorithm is kept (RFC 8760), never the password; it belongs to a callgate user."""

    __tablename__ = "sip_credentials"
    __table_args__ = (UniqueConstraint("username", name="uq_sip_credentials_username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("users.id", name="fk_sip_credentials_user_id", ondelete="CASCADE"),
        index=True,
    )
    device: Mapped[str] = mapped_column(String(64))
    realm: Mapped[str] = mapped_column(String(255))
    ha1_md5: Mapped[str] = mapped_column(String(32))
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    # called with SRTP only (SDES, RFC 4568): runtime/sip_calls.py
    srtp: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
