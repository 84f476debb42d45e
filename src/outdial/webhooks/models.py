from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, BigInt, JSONType, UTCDateTime, utcnow


class EndpointStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class DisabledReason(StrEnum):
    MANUAL = "manual"  # PUT {"status": "disabled"}
    GONE = "gone"  # the receiver answered 410
    FAILING = "failing"  # every attempt failed for 5 days


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its first try or a retry
    SENDING = "sending"  # claimed by a delivery process (leased until next_attempt_at)
    DELIVERED = "delivered"
    FAILED = "failed"  # retries exhausted, or the receiver answered 410


ACTIVE = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
"""Statuses of a delivery not yet finished (its `finished_at` is null)."""


class WebhookEndpoint(Base):
    """Where a tenant wants its events sent, and which of them."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        # emit_events looks up the enabled endpoints of a tenant on every status change.
        Index("ix_webhook_endpoints_tenant_status", "tenant_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(1000))
    events: Mapped[list[str]] = mapped_column(JSONType)
    secret: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=EndpointStatus.ENABLED)
    disabled_reason: Mapped[str | None] = mapped_column(String(16))
    # When the current run of failed attempts began (null while the last attempt succeeded).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one event for one endpoint, written in the transaction of the change it
    reports, with its body serialised once so that every retry sends the same bytes.

    `seq` orders deliveries as they were written; deliveries of one endpoint with the same
    `ordering_key` go out in that order while none of them is failing (`holds_order`)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Claims: which endpoints have unfinished deliveries, and each one's by due time.
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            "seq",
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
        # Claims: is an earlier delivery of the same key to the same endpoint still unsent?
        Index(
            "ix_webhook_deliveries_order",
            "endpoint_id",
            "ordering_key",
            "seq",
            postgresql_where=text("finished_at IS NULL"),
            sqlite_where=text("finished_at IS NULL"),
        ),
        # The delivery log of an endpoint, and deleting an endpoint's deliveries.
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "seq"),
        # A call's timeline: the deliveries of its events (their key is the call's id).
        Index("ix_webhook_deliveries_key", "ordering_key", "seq"),
        # Pruning finished deliveries by age.
        Index(
            "ix_webhook_deliveries_finished",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
        # No rowid reuse on SQLite: a deleted delivery's id never names a later one.
        {"sqlite_autoincrement": True},
    )

    # No foreign keys: this table is bulk-written in the dialer's settle path, where
    # PostgreSQL would check them row by row; an endpoint's deletion deletes its deliveries.
    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(40))
    ordering_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    holds_order: Mapped[bool] = mapped_column(Boolean)
    # Attempts started so far; a claim counts its attempt, and that number fences the result
    # a delivery process writes back (a process that outlived its lease writes nothing).
    attempts: Mapped[int] = mapped_column(Integer)
    # Due time while pending; the lease's end while sending; null once finished, or while
    # its endpoint is disabled.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    """One try at sending a delivery: the delivery log, kept 30 days."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_started_at", "started_at"),)

    delivery_seq: Mapped[int] = mapped_column(BigInt, primary_key=True)
    attempt_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    # The first bytes of what a receiver answered with a status other than 2xx.
    response: Mapped[str | None] = mapped_column(String(500))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
