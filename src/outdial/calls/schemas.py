import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
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
from pydantic_core import InitErrorDetails

from outdial.calls.statuses import EndReason
from outdial.phones import E164, InvalidPhoneNumber, to_e164
from outdial.validation import (
    JsonObject,
    Label,
    Name,
    RequestModel,
    ShortText,
    at_most,
    distinct,
    problem,
)

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

    start: ShortText = "08:00"
    end: ShortText = "21:00"
    days: list[Weekday] = Field(default_factory=lambda: list(ALL_DAYS), min_length=1)
    timezone: ShortText = Field(default="recipient", description='"recipient" or an IANA zone')
    fallback_timezone: ShortText = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
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


class Recipient(RequestModel):
    to: E164 | None = None
    identity: E164 | None = None
    from_number: E164 | None = None
    metadata: JsonObject = Field(default_factory=dict)

    @classmethod
    def cross_field_problems(cls, data: dict[str, Any]) -> list[InitErrorDetails]:
        if data.get("to") is None and data.get("identity") is None:
            return [problem([], "missing", "A recipient needs `to` (or `identity`).")]
        return []

    @model_validator(mode="after")
    def _same_number(self) -> "Recipient":
        if self.to is not None and self.identity is not None and self.to != self.identity:
            raise ValueError("`to` and `identity` name different numbers")
        return self

    @property
    def number(self) -> str:
        number = self.to or self.identity
        assert number is not None
        return number


RetryableReason = Literal[
    EndReason.BUSY,
    EndReason.NO_ANSWER,
    EndReason.VOICEMAIL,
    EndReason.REJECTED,
    EndReason.CARRIER_ERROR,
]
DEFAULT_RING_TIMEOUT = 30
MIN_RING_TIMEOUT = 15
DEFAULT_MAX_ATTEMPTS_PER_24H = 3
"""The frequency cap of state rules (dialer/state_rules.py: Florida, Oklahoma, Maryland)."""
MAX_ATTEMPTS_PER_24H = Field(
    ge=1,
    le=10,
    description="Under state rules: dial a number at most this many times in any 24 hours, "
    "across all of the tenant's campaigns and the batches that ask for state rules.",
)


class RetryPolicy(BaseModel):
    """When an attempt ends for one of `on`, try again after `delay_seconds`, up to
    `max_attempts` attempts in all."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=1, ge=1, le=10)
    on: list[RetryableReason] = Field(default_factory=lambda: [EndReason.BUSY, EndReason.NO_ANSWER])
    delay_seconds: int = Field(default=3600, ge=0, le=7 * 24 * 3600)


class CallOptions(BaseModel):
    """What a batch and a direct call share."""

    model_config = ConfigDict(extra="forbid")

    from_number: E164 | None = None
    metadata: JsonObject = Field(default_factory=dict)
    variables: JsonObject = Field(default_factory=dict)
    post_call: JsonObject | None = None
    calling_window: CallingWindow | None = None
    retry: RetryPolicy | None = None
    ring_timeout_seconds: int = Field(default=DEFAULT_RING_TIMEOUT, ge=MIN_RING_TIMEOUT, le=600)
    state_rules: bool = Field(
        default=False,
        description="Apply state rules: the stricter calling hours of the states that set "
        "them, judged in the recipient's local time, and the frequency cap "
        "(`max_attempts_per_24h`).",
    )
    max_attempts_per_24h: Annotated[int | None, MAX_ATTEMPTS_PER_24H] = Field(
        default=None,
        description=f"With `state_rules` only; {DEFAULT_MAX_ATTEMPTS_PER_24H} if omitted.",
    )

    @field_validator("max_attempts_per_24h")
    @classmethod
    def _cap_with_state_rules(cls, value: int | None, info: ValidationInfo) -> int | None:
        # `state_rules` is validated first; when it is invalid, that is the error reported.
        if value is not None and info.data.get("state_rules") is False:
            raise ValueError("applies only with state_rules: true")
        return value


_RECIPIENTS = Field(min_length=1, max_length=MAX_RECIPIENTS)
Numbers = Annotated[
    list[E164], _RECIPIENTS, distinct(E164, lambda number: number), at_most(MAX_RECIPIENTS)
]
Recipients = Annotated[
    list[Recipient], _RECIPIENTS, distinct(Recipient, lambda r: r.number), at_most(MAX_RECIPIENTS)
]


class BatchCreate(CallOptions, RequestModel):
    agent_id: UUID
    to: Numbers | None = None
    recipients: Recipients | None = None
    batch_id: Name | None = None

    @classmethod
    def cross_field_problems(cls, data: dict[str, Any]) -> list[InitErrorDetails]:
        to, recipients = data.get("to"), data.get("recipients")
        if to is not None and recipients is not None:
            return [problem([], "value_error", "Send `to` or `recipients`, not both.")]
        if to is None and recipients is None:
            return [problem([], "missing", "Send `to` or `recipients`.")]
        return []


class ParticipantCreate(RequestModel):
    transport: Literal["pstn", "webrtc"]
    identity: Name
    name: Label | None = None
    from_number: E164 | None = None
    metadata: JsonObject = Field(default_factory=dict)

    @field_validator("identity")
    @classmethod
    def _pstn_identity_is_a_number(cls, value: str, info: ValidationInfo) -> str:
        # `transport` is validated first; when it is invalid, that is the error reported.
        if info.data.get("transport") == "pstn":
            return _phone_number(value)
        return value

    @classmethod
    def cross_field_problems(cls, data: dict[str, Any]) -> list[InitErrorDetails]:
        if data.get("transport") == "webrtc" and data.get("from_number") is not None:
            return [
                problem(
                    ["from_number"], "value_error", "from_number applies to pstn participants only."
                )
            ]
        return []


class CallCreate(CallOptions):
    agent_id: UUID | None = Field(
        default=None, description="Required with a secret key; a publishable key has its own."
    )
    participants: Annotated[
        list[ParticipantCreate],
        _RECIPIENTS,
        distinct(ParticipantCreate, lambda p: (p.transport, p.identity)),
        at_most(MAX_RECIPIENTS),
    ]


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
    state_rules: bool
    max_attempts_per_24h: int | None = Field(description="The frequency cap, with state_rules.")
    created_at: datetime
    ended_at: datetime | None


class CallOut(CallSummary):
    participant_counts: dict[str, int]
    participants: list[ParticipantOut]


class AttemptOut(BaseModel):
    """One dial of a participant, and why it was allowed when it was placed."""

    id: str
    participant_id: str
    attempt: int = Field(description="The participant's dial this was: 1, then 2 for a retry…")
    status: Literal["placing", "placed", "answered", "ended", "lost"]
    provider: str
    provider_call_id: str | None
    from_number: str = Field(description="The caller ID dialed from.")
    to_number: str
    created_at: datetime = Field(description="When the dial was committed, checks passed.")
    dial_at: datetime = Field(description="The dial's pacing slot: when it was to be placed.")
    placed_at: datetime | None
    answered_at: datetime | None
    answered_by: Literal["human", "machine"] | None
    ended_at: datetime | None
    end_reason: str | None = Field(description="The dial's outcome, once it has ended.")
    talk_seconds: int | None
    checks: dict[str, Any] | None = Field(
        description="The checks that allowed the dial, as they stood when it was committed: "
        "`dnc` (listed, checked_at), `caller_id` (number, owned), `agent` (exists), `credit` "
        "(available), `window` (start, end, days and the zones with their local times), "
        "`state_rule` (state, hours, source, zones) and `frequency` (dials_in_24h before this "
        "one, limit, source); null for a rule that did not bind the dial. null for dials made "
        "before outdial recorded checks."
    )


class QueueStats(BaseModel):
    waiting: int
    active: int
    completed: int
    failed: int
