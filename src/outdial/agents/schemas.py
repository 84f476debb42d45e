from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from outdial.agents.models import STREAM_URL_MAX_LENGTH
from outdial.phones import E164
from outdial.validation import AgentConfig, JsonObject, LongText, Name

VoicemailBehavior = Literal["leave_message", "hangup"]


def _stream_url(value: str) -> str:
    """A WebSocket URL with a host: where the agent's calls are connected."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError("must be a ws:// or wss:// URL") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("must be a ws:// or wss:// URL (e.g. wss://agent.example.com/stream)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return value


StreamUrl = Annotated[
    str, Field(min_length=1, max_length=STREAM_URL_MAX_LENGTH), AfterValidator(_stream_url)
]


class AgentFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_per_minute: Decimal = Field(default=Decimal(0), ge=0, le=1_000_000, decimal_places=6)
    default_from_number: E164 | None = None
    voicemail_behavior: VoicemailBehavior = "hangup"
    voicemail_message: LongText | None = None
    post_call: JsonObject = Field(default_factory=dict)
    config: AgentConfig = Field(default_factory=dict)
    stream_url: StreamUrl | None = None


class AgentCreate(AgentFields):
    name: Name


class AgentUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    rate_per_minute: Decimal | None = Field(default=None, ge=0, le=1_000_000, decimal_places=6)
    default_from_number: E164 | None = None
    voicemail_behavior: VoicemailBehavior | None = None
    voicemail_message: LongText | None = None
    post_call: JsonObject | None = None
    config: AgentConfig | None = None
    stream_url: StreamUrl | None = None


class AgentOut(BaseModel):
    id: str
    name: str
    rate_per_minute: float
    default_from_number: str | None
    voicemail_behavior: str
    voicemail_message: str | None
    post_call: dict[str, Any]
    config: dict[str, Any]
    stream_url: str | None = Field(
        description="Where every answered call is connected (Twilio Media Streams protocol)."
    )
    stream_secret: str = Field(
        description="Signs the stream's upgrade request (Standard Webhooks). In full only in "
        "the answer to create and to rotate-secret; masked (`whsec_****` and its last four "
        "characters) everywhere else."
    )
    created_at: datetime
    updated_at: datetime
