from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, text
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
    end_reason: Mapped[str | None] = mapped_column(String(16))
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


class DialJob(Base):
    """One entry of the durable dial queue; the dialer claims, leases and finishes these."""

    __tablename__ = "dial_jobs"
    __table_args__ = (
        # Claims walk a tenant's due jobs; reconciliation finds the active jobs of dialers
        # whose lease (dialer_leases) has lapsed.
        Index("ix_dial_jobs_tenant_status_run_at", "tenant_id", "status", "run_at"),
        Index("ix_dial_jobs_status_owner", "status", "lease_owner"),
        # Claims of one campaign's jobs, its caps and its completion; batch jobs skip it.
        Index(
            "ix_dial_jobs_campaign",
            "tenant_id",
            "campaign_id",
            "status",
            "run_at",
            postgresql_where=text("campaign_id IS NOT NULL"),
            sqlite_where=text("campaign_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    call_id: Mapped[str] = mapped_column(String(40))
    participant_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    to_number: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str] = mapped_column(String(16))
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    campaign_id: Mapped[str | None] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    """The dialer holding this active job, for as long as its row in dialer_leases lasts."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
