import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal
from uuid import UUID
from zoneinfo import available_timezones

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from outdial.phones import E164, InvalidPhoneNumber, to_e164

MAX_RECIPIENTS = 500
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: list[Weekday] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _phone_number(value: str) -> str:
    """What the E164 type does, for a field that holds a number only for PSTN participants."""
    try:
        return to_e164(value)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"{value!r} is {exc}") from None


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """Scanning the tz database takes ~10 ms: once per process is enough."""
    return frozenset(available_timezones())


def _check_zone(name: str) -> str:
    if name not in _zone_names():
        raise ValueError(f"{name!r} is not an IANA time zone")
    return name


class CallingWindow(BaseModel):
    """Hours in which a recipient may be called, judged in the recipient's local time."""

    model_config = ConfigDict(extra="forbid")

    start: str = "08:00"
    end: str = "21:00"
    days: list[Weekday] = Field(default_factory=lambda: list(ALL_DAYS), min_length=1)
    timezone: str = Field(default="recipient", description='"recipient" or an IANA zone')
    fallback_timezone: str = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("must be HH:MM, 24-hour")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_or_recipient(cls, value: str) -> str:
        return value if value == "recipient" else _check_zone(value)

    @field_validator("fallback_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value)

    @model_validator(mode="after")
    def _non_empty(self) -> "CallingWindow":
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: E164 | None = None
    identity: E164 | None = None
    from_number: E164 | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_number(self) -> "Recipient":
        if self.to is None and self.identity is None:
            raise ValueError("a recipient needs `to` (or `identity`)")
        if self.to is not None and self.identity is not None and self.to != self.identity:
            raise ValueError("`to` and `identity` name different numbers")
        return self

    @property
    def number(self) -> str:
        number = self.to or self.identity
        assert number is not None
        return number


RetryableReason = Literal["busy", "no_answer", "voicemail", "rejected", "carrier_error"]
DEFAULT_RING_TIMEOUT = 30
MIN_RING_TIMEOUT = 15


class RetryPolicy(BaseModel):
    """When an attempt ends for one of `on`, try again after `delay_seconds`, up to
    `max_attempts` attempts in all."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=1, ge=1, le=10)
    on: list[RetryableReason] = Field(default_factory=lambda: ["busy", "no_answer"])
    delay_seconds: int = Field(default=3600, ge=0, le=7 * 24 * 3600)


class CallOptions(BaseModel):
    """What a batch and a direct call share."""

    model_config = ConfigDict(extra="forbid")

    from_number: E164 | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    variables: dict[str, Any] = Field(default_factory=dict)
    post_call: dict[str, Any] | None = None
    calling_window: CallingWindow | None = None
    retry: RetryPolicy | None = None
    ring_timeout_seconds: int = Field(default=DEFAULT_RING_TIMEOUT, ge=MIN_RING_TIMEOUT, le=600)


class BatchCreate(CallOptions):
    agent_id: UUID
    to: list[E164] | None = Field(default=None, max_length=MAX_RECIPIENTS)
    recipients: list[Recipient] | None = Field(default=None, max_length=MAX_RECIPIENTS)
    batch_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _to_or_recipients(self) -> "BatchCreate":
        if self.to is not None and self.recipients is not None:
            raise ValueError("send `to` or `recipients`, not both")
        chosen = self.to if self.to is not None else self.recipients
        if chosen is None:
            raise ValueError("send `to` or `recipients`")
        if not chosen:
            raise ValueError("the recipient list is empty")
        return self


class ParticipantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Literal["pstn", "webrtc"]
    identity: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    from_number: E164 | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("identity")
    @classmethod
    def _pstn_identity_is_a_number(cls, value: str, info: ValidationInfo) -> str:
        # `transport` is validated first; when it is invalid, that is the error reported.
        if info.data.get("transport") == "pstn":
            return _phone_number(value)
        return value

    @model_validator(mode="after")
    def _from_number_is_for_pstn(self) -> "ParticipantCreate":
        if self.transport != "pstn" and self.from_number is not None:
            raise ValueError("from_number applies to pstn participants only")
        return self


class CallCreate(CallOptions):
    agent_id: UUID | None = Field(
        default=None, description="Required with a secret key; a publishable key has its own."
    )
    participants: list[ParticipantCreate] = Field(min_length=1, max_length=MAX_RECIPIENTS)


def _omit_if_none(value: Any) -> bool:
    return value is None


class ParticipantQueued(BaseModel):
    id: str
    transport: str
    identity: str
    status: str
    telephony_leg_id: str | None
    job_id: str | None
    url: str | None = Field(default=None, exclude_if=_omit_if_none)
    token: str | None = Field(default=None, exclude_if=_omit_if_none)


class CallQueued(BaseModel):
    id: str
    room_name: str
    status: str
    batch_id: str | None
    queued: int
    participants: list[ParticipantQueued]


class ParticipantOut(BaseModel):
    id: str
    transport: str
    identity: str
    from_number: str | None
    status: str
    end_reason: str | None
    attempts: int
    telephony_leg_id: str | None
    job_id: str | None
    metadata: dict[str, Any]
    duration_seconds: int | None
    cost: float
    created_at: datetime
    dialed_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None


class CallSummary(BaseModel):
    id: str
    room_name: str
    kind: str
    status: str
    agent_id: str
    batch_id: str | None
    campaign_id: str | None
    from_number: str | None
    metadata: dict[str, Any]
    variables: dict[str, Any]
    post_call: dict[str, Any]
    calling_window: dict[str, Any] | None
    retry: dict[str, Any] | None
    ring_timeout_seconds: int
    created_at: datetime
    ended_at: datetime | None


class CallOut(CallSummary):
    participant_counts: dict[str, int]
    participants: list[ParticipantOut]


class QueueStats(BaseModel):
    waiting: int
    active: int
    completed: int
    failed: int
