from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, JSONType, UTCDateTime, utcnow


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
    never_received: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Dials of this job the carrier never took (withdrawn, not failed): its next wait grows
    with each (dialer/breaker.py, Backoff)."""
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    """The dialer holding this active job, for as long as its row in dialer_leases lasts."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DialAttempt(Base):
    """One try at reaching a participant, committed *before* the provider is asked to dial.

    `(job_id, attempt_no)` is unique, so an attempt can be placed at most once; after a crash
    an attempt that is not `ended` has an unknown fate and is reconciled with the provider."""

    __tablename__ = "dial_attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt_no"),
        Index("ix_dial_attempts_job", "job_id"),
        # The frequency cap: a tenant's dials of these numbers in the last 24 hours, one
        # probe per claim (dialer/policy.recent_dials).
        Index("ix_dial_attempts_tenant_number_dial_at", "tenant_id", "to_number", "dial_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(40))
    participant_id: Mapped[str] = mapped_column(String(40), index=True)
    call_id: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str] = mapped_column(String(40))
    attempt_no: Mapped[int] = mapped_column(Integer)
    # placing → placed → answered → ended; or lost (fate unknown after a crash)
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(16))
    provider_call_id: Mapped[str | None] = mapped_column(String(100))
    to_number: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str] = mapped_column(String(16))
    dialer_id: Mapped[str] = mapped_column(String(64))
    dial_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # human | machine: a call a machine answered ends as voicemail
    answered_by: Mapped[str | None] = mapped_column(String(8))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """Why the dial was allowed when it was committed (dialer/audit.py): DNC, caller ID, agent,
    credit, the window and state rules with the zones and local times judged, the frequency
    count. None for attempts made before it was recorded."""


class CallerPacing(Base):
    """The next free dial slot of a caller ID, shared by every dialer process."""

    __tablename__ = "caller_pacing"

    from_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    next_slot_at: Mapped[float] = mapped_column(Float)


class DialerLease(Base):
    """A running dialer process and how long its claim on its active jobs lasts. A dialer
    renews this one row (not each of its jobs), so a heartbeat costs one write however many
    calls it has in flight, and never contends with the writes that settle those calls."""

    __tablename__ = "dialer_leases"

    dialer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lease_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
