from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from outdial.phones import E164

VoicemailBehavior = Literal["leave_message", "hangup"]


class AgentFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_per_minute: Decimal = Field(default=Decimal(0), ge=0, le=1_000_000, decimal_places=6)
    default_from_number: E164 | None = None
    voicemail_behavior: VoicemailBehavior = "hangup"
    voicemail_message: str | None = Field(default=None, max_length=5000)
    post_call: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


class AgentCreate(AgentFields):
    name: str = Field(min_length=1, max_length=200)


class AgentUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    rate_per_minute: Decimal | None = Field(default=None, ge=0, le=1_000_000, decimal_places=6)
    default_from_number: E164 | None = None
    voicemail_behavior: VoicemailBehavior | None = None
    voicemail_message: str | None = Field(default=None, max_length=5000)
    post_call: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


class AgentOut(BaseModel):
    id: str
    name: str
    rate_per_minute: float
    default_from_number: str | None
    voicemail_behavior: str
    voicemail_message: str | None
    post_call: dict[str, Any]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
