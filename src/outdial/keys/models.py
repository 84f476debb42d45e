from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, JSONType, UTCDateTime, utcnow


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    agent_id: Mapped[str | None] = mapped_column(String(36))
    channels: Mapped[list[str] | None] = mapped_column(JSON)
    default_from_number: Mapped[str | None] = mapped_column(String(16))
    # A publishable key's variables, fixed by the tenant when it made the key: every call the
    # key places carries them, and no request may override one (see calls' publishable rules).
    variables: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
