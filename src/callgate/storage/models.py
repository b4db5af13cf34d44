"""Database models (SQLAlchemy 2, typed). Portable types only: SQLite today, PostgreSQL later."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, UniqueConstraint
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

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
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
