from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, BigInt, JSONType, UTCDateTime, utcnow
from outdial.validation import MAX_IDEMPOTENCY_KEY_LENGTH


class DncEntry(Base):
    __tablename__ = "dnc_entries"

    # No foreign key: checked per row, it cost as much as the insert in a registry import
    # (see migration cb0684729d89); the tenant always comes from the authenticated key.
    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    phone_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(16), default="api")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DncImportStatus(StrEnum):
    IMPORTING = "importing"  # under way, or stopped part-way (a retry resumes it)
    COMPLETED = "completed"


class DncImport(Base):
    """A `POST /v1/dnc/import` sent with an Idempotency-Key: how far it has got, committed
    with every chunk it imports, so that a retry with the key resumes it where it stopped, or
    replays its answer once it is done. `digest` is the SHA-256 of the body's first
    `bytes_read` bytes: a retry must send the same ones."""

    __tablename__ = "dnc_imports"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(
        String(MAX_IDEMPOTENCY_KEY_LENGTH), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(32))  # the request importing it now
    status: Mapped[DncImportStatus] = mapped_column(String(16))
    bytes_read: Mapped[int] = mapped_column(BigInt)
    rows_read: Mapped[int] = mapped_column(BigInt)
    digest: Mapped[str] = mapped_column(String(64))
    inserted_count: Mapped[int] = mapped_column(BigInt)
    duplicate_count: Mapped[int] = mapped_column(BigInt)
    invalid_count: Mapped[int] = mapped_column(BigInt)
    invalid: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
