from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from outdial.validation import Description, ShortText, Url
from outdial.webhooks.models import DeliveryStatus, DisabledReason, EndpointStatus
from outdial.webhooks.outbox import ALL_EVENTS, EventType

EVENT_FILTERS = [ALL_EVENTS, *EventType]

_URL_DESCRIPTION = (
    "Where events are POSTed: an http:// or https:// URL whose host resolves to public "
    "addresses only."
)
_EVENTS = {
    "min_length": 1,
    "max_length": 20,
    "description": 'The event types to send, or `["*"]` for all of them.',
    "json_schema_extra": {"items": {"type": "string", "enum": EVENT_FILTERS}},
}


def _known_events(events: list[str] | None) -> list[str] | None:
    """Unknown types are refused all at once, each named; repeats are dropped."""
    if events is None:
        return None
    unknown = [event for event in events if event not in EVENT_FILTERS]
    if unknown:
        raise ValueError(
            f"unknown event types: {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(EVENT_FILTERS)})"
        )
    return list(dict.fromkeys(events))


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url = Field(
        description=_URL_DESCRIPTION,
        examples=["https://example.com/outdial/events"],
    )
    events: list[ShortText] = Field(default_factory=lambda: [ALL_EVENTS], **_EVENTS)  # type: ignore[arg-type]
    description: Description | None = None

    _check_events = field_validator("events")(_known_events)


class WebhookUpdate(BaseModel):
    """Only the fields sent change; `{"status": "enabled"}` re-enables a disabled endpoint
    (its failures are forgotten and the deliveries it held back are sent)."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = Field(default=None, description=_URL_DESCRIPTION)
    events: list[ShortText] | None = Field(default=None, **_EVENTS)  # type: ignore[arg-type]
    description: Description | None = None
    status: EndpointStatus | None = None

    _check_events = field_validator("events")(_known_events)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    status: EndpointStatus
    disabled_reason: DisabledReason | None = Field(
        description="Why it is disabled: `manual` (a PUT), `gone` (the receiver answered 410), "
        "`failing` (every attempt failed for 5 days); null while enabled."
    )
    failing_since: datetime | None = Field(
        description="When the current run of failed attempts began; null after a success."
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The signing secret (`whsec_…`) for verifying deliveries with the "
        "Standard Webhooks libraries; shown only in this response."
    )


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None = Field(description="The receiver's HTTP status; null if none.")
    error: str | None = Field(description="Why no 2xx came back (timeout, connection error …).")
    response: str | None = Field(description="The first bytes of a non-2xx answer's body.")
    next_retry_at: datetime | None = Field(
        description="When the delivery was due again after this attempt; null if not."
    )


class DeliveryOut(BaseModel):
    id: str
    event_id: str = Field(description="Sent as `webhook-id`, the same on every retry.")
    event_type: EventType
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None = Field(
        description="When it is due (pending) or its send times out (sending); null once "
        "finished, or while the endpoint is disabled."
    )
    created_at: datetime
    finished_at: datetime | None
    event: dict[str, Any] = Field(description="The body sent: `{type, timestamp, data}`.")
    attempts: list[AttemptOut]
