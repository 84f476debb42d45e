from datetime import datetime

from sqlalchemy import Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, UTCDateTime, utcnow


class DialAttempt(Base):
    """One try at reaching a participant, committed *before* the provider is asked to dial.

    `(job_id, attempt_no)` is unique, so an attempt can be placed at most once; after a crash
    an attempt that is not `ended` has an unknown fate and is reconciled with the provider."""

    __tablename__ = "dial_attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt_no"),
        Index("ix_dial_attempts_job", "job_id"),
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
    end_reason: Mapped[str | None] = mapped_column(String(16))
    talk_seconds: Mapped[int | None] = mapped_column(Integer)


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
