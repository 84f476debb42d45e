from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, BigInt, JSONType, UTCDateTime, utcnow


class Call(Base):
    """One call session (a room): a batch, a direct fan-out, or one campaign contact's call."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_tenant_batch", "tenant_id", "batch_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    kind: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(String(200))
    campaign_id: Mapped[str | None] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str | None] = mapped_column(String(16))
    call_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    post_call: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    calling_window: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    retry: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    ring_timeout_seconds: Mapped[int] = mapped_column(Integer, default=30)
    # State rules (dialer/state_rules.py), asked for by the batch; a campaign's calls follow
    # their campaign's settings instead.
    state_rules: Mapped[bool] = mapped_column(Boolean, default=False)
    max_attempts_per_24h: Mapped[int | None] = mapped_column(Integer)
    # Whether its provider reports its WebRTC participants joining and leaving (the
    # configured provider's `sees_webrtc` when the call was made); if not, they end with
    # the call (dialer/status.py).
    webrtc_seen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (
        # The dialers' heartbeat looks for hang-ups someone asked for: few rows, often.
        Index(
            "ix_participants_hangup_requested",
            "hangup_requested_at",
            postgresql_where=text("hangup_requested_at IS NOT NULL"),
            sqlite_where=text("hangup_requested_at IS NOT NULL"),
        ),
        # WebRTC participants not yet ended (dialer/status.py ends them with their call, and
        # sweeps idle all-WebRTC calls): few rows, and none of the PSTN ones a batch writes.
        Index(
            "ix_participants_open_webrtc",
            "call_id",
            postgresql_where=text("transport = 'webrtc' AND ended_at IS NULL"),
            sqlite_where=text("transport = 'webrtc' AND ended_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # No foreign keys on the bulk-written tables: PostgreSQL checks them row by row, which
    # doubled the cost of a 500-recipient batch; they are only ever written together, by _queue.
    call_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    position: Mapped[int] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(8))
    identity: Mapped[str] = mapped_column(String(200))
    from_number: Mapped[str | None] = mapped_column(String(16))
    participant_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    telephony_leg_id: Mapped[str | None] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(40))
    hold_micros: Mapped[int] = mapped_column(BigInt, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInt, default=0)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dialed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hangup_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
