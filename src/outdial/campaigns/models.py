from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outdial.campaigns.statuses import ContactStatus
from outdial.db import Base, JSONType, UTCDateTime, utcnow


class Campaign(Base):
    """A contact list dialed under one agent, caller ID and set of dialing settings."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    name: Mapped[str] = mapped_column(String(200))
    call_from_number: Mapped[str] = mapped_column(String(16))
    # draft → running → completed, and running ⇄ paused
    status: Mapped[str] = mapped_column(String(16))
    # Why a paused campaign is paused (statuses.PausedReason); None while it is not.
    paused_reason: Mapped[str | None] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The dialer turns contacts into calls as it reaches them, in id order: `queued_through`
    # is the last contact it has queued, `contacts_left` whether any pending one follows.
    queued_through: Mapped[str] = mapped_column(String(40), default="")
    contacts_left: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Calls keep their campaign_id after it is deleted, so deletion is a tombstone.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CampaignContact(Base):
    """One number to call in a campaign: pending → dialed → completed | failed, or
    pending → skipped_dnc. Stored once per campaign (the unique index)."""

    __tablename__ = "campaign_contacts"
    __table_args__ = (
        # No foreign keys and only these two indexes: a million-row import writes them all.
        UniqueConstraint("campaign_id", "phone_number"),
    )

    campaign_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    phone_number: Mapped[str] = mapped_column(String(16))
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    timezone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ContactStatus.PENDING)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    call_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CampaignAnswerDay(Base):
    """A campaign's calls a person answered on one UTC day, and how many of them were
    abandoned (ended agent_unavailable): the abandonment rate's counts, kept as contacts
    settle so that its 30 days are at most 30 rows to read, whatever the campaign's size
    (campaigns/abandonment.py)."""

    __tablename__ = "campaign_answer_days"

    campaign_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    abandoned: Mapped[int] = mapped_column(Integer, default=0)
