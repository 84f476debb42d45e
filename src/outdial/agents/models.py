from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, BigInt, JSONType, UTCDateTime, utcnow

STREAM_URL_MAX_LENGTH = 2048


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    rate_per_minute_micros: Mapped[int] = mapped_column(BigInt, default=0)
    default_from_number: Mapped[str | None] = mapped_column(String(16))
    voicemail_behavior: Mapped[str] = mapped_column(String(16), default="hangup")
    voicemail_message: Mapped[str | None] = mapped_column(Text)
    post_call: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Where every answered call of this agent is connected (ws:// or wss://), and the secret
    # that signs the upgrade request (Standard Webhooks). Every agent has a secret, so that
    # setting a stream_url later needs no second step.
    stream_url: Mapped[str | None] = mapped_column(String(STREAM_URL_MAX_LENGTH))
    stream_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Calls keep pointing at their agent after it is deleted, so deletion is a tombstone.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
