from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from outdial.calls.schemas import (
    DEFAULT_MAX_ATTEMPTS_PER_24H,
    DEFAULT_RING_TIMEOUT,
    MAX_ATTEMPTS_PER_24H,
    MIN_RING_TIMEOUT,
    CallingWindow,
    RetryPolicy,
)
from outdial.campaigns.statuses import CampaignStatus, ContactStatus, PausedReason
from outdial.phones import E164
from outdial.validation import JsonObject, Name, ShortText, at_most

MAX_JSON_CONTACTS = 10_000
MAX_LISTED_INVALID = 100
"""An answer lists at most this many invalid rows (and says how many there were), so that a
bad million-row file does not make a huge answer."""

CONTACT_STATUSES = tuple(ContactStatus)


class BlockerCode(StrEnum):
    """Why a campaign would not dial right now (README, "Launch check"): campaign_completed;
    campaign_paused (paused_reason says why); agent_deleted; caller_id_not_owned (the tenant
    no longer owns call_from_number); insufficient_credit (less available than one 30-second
    increment at the agent's rate); tenant_inactive; tenant_concurrency_zero;
    no_pending_contacts (none pending, or all on the DNC list); calling_window_never_opens
    (not within 8 days); outside_calling_window and retries_not_due (matters of time, with
    `until`: they never stop start)."""

    CAMPAIGN_COMPLETED = "campaign_completed"
    CAMPAIGN_PAUSED = "campaign_paused"
    AGENT_DELETED = "agent_deleted"
    CALLER_ID_NOT_OWNED = "caller_id_not_owned"
    INSUFFICIENT_CREDIT = "insufficient_credit"
    TENANT_INACTIVE = "tenant_inactive"
    TENANT_CONCURRENCY_ZERO = "tenant_concurrency_zero"
    NO_PENDING_CONTACTS = "no_pending_contacts"
    CALLING_WINDOW_NEVER_OPENS = "calling_window_never_opens"
    OUTSIDE_CALLING_WINDOW = "outside_calling_window"
    RETRIES_NOT_DUE = "retries_not_due"


class WarningCode(StrEnum):
    """What would make a campaign's calls less than they could be: agent_without_stream_url
    (answered calls held silent); calls_per_second_above_carrier_default (over 1 a second
    per caller ID: carriers allow 1-2 by default); calls_per_second_above_tenant_limit and
    max_concurrency_above_tenant_limit (the tenant's lower limit applies)."""

    AGENT_WITHOUT_STREAM_URL = "agent_without_stream_url"
    CALLS_PER_SECOND_ABOVE_CARRIER_DEFAULT = "calls_per_second_above_carrier_default"
    CALLS_PER_SECOND_ABOVE_TENANT_LIMIT = "calls_per_second_above_tenant_limit"
    MAX_CONCURRENCY_ABOVE_TENANT_LIMIT = "max_concurrency_above_tenant_limit"


class CampaignSettings(BaseModel):
    """How a campaign is dialed, within the tenant's own limits."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int = Field(default=10, ge=1, le=10_000)
    calls_per_second: float = Field(default=1.0, gt=0, le=1000)
    calling_window: CallingWindow = Field(default_factory=CallingWindow)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    ring_timeout_seconds: int = Field(default=DEFAULT_RING_TIMEOUT, ge=MIN_RING_TIMEOUT, le=600)
    state_rules: bool = Field(
        default=True,
        description="State rules: the stricter calling hours of the states that set them "
        "(Florida, Oklahoma, Maryland and others), on top of `calling_window`, and the "
        "frequency cap `max_attempts_per_24h`. false turns both off.",
    )
    max_attempts_per_24h: Annotated[int, MAX_ATTEMPTS_PER_24H] = DEFAULT_MAX_ATTEMPTS_PER_24H


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    name: Name
    call_from_number: E164
    settings: CampaignSettings = Field(default_factory=CampaignSettings)


class CampaignUpdate(BaseModel):
    """Fields left out keep their values; `settings` replaces the settings it names."""

    model_config = ConfigDict(extra="forbid")

    agent_id: UUID | None = None
    name: Name | None = None
    call_from_number: E164 | None = None
    settings: JsonObject | None = Field(
        default=None, description="Any of the settings' fields; the rest keep their values."
    )


class CampaignCreated(BaseModel):
    status: Literal["created"] = "created"
    campaign_id: str


class ContactCounts(BaseModel):
    total: int
    pending: int
    dialed: int
    completed: int
    failed: int
    skipped_dnc: int


class CampaignOut(BaseModel):
    id: str
    name: str
    agent_id: str
    call_from_number: str
    status: CampaignStatus
    paused_reason: PausedReason | None = Field(
        description="Why a paused campaign is paused: `requested` (POST …/pause) or "
        "`abandonment_rate` (it paused itself: see `abandonment`); null unless paused."
    )
    settings: CampaignSettings
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class AbandonmentOut(BaseModel):
    """Of the campaign's calls a person answered over the last `window_days`, those that
    ended agent_unavailable (answered, and nobody spoke)."""

    rate: float = Field(description="abandoned / answered (0 with no answer yet).")
    answered: int
    abandoned: int
    window_days: int = Field(description="Today (UTC) and the days before it.")
    limit: float = Field(
        description="The campaign pauses itself once abandoned exceeds this share of "
        "max(answered, min_answered)."
    )
    min_answered: int


class CampaignDetail(CampaignOut):
    contacts: ContactCounts
    attempts: int = Field(description="Dial attempts made so far, retries included.")
    answered: int = Field(description="Contacts whose call a person answered.")
    progress: float = Field(
        description="Contacts in a final state (completed, failed, skipped_dnc) over all "
        "contacts, from 0 to 1."
    )
    abandonment: AbandonmentOut


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: ShortText = Field(description="E.164, with or without the +.")
    variables: JsonObject = Field(default_factory=dict)
    timezone: ShortText | None = Field(default=None, description="An IANA zone.")


class ContactsUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: Annotated[
        list[ContactIn],
        Field(min_length=1, max_length=MAX_JSON_CONTACTS),
        at_most(MAX_JSON_CONTACTS),
    ]


class InvalidRow(BaseModel):
    row: int = Field(description="The CSV line (the header is line 1), or the JSON index.")
    reason: str


class ContactsInserted(BaseModel):
    status: Literal["success"] = "success"
    inserted_count: int
    duplicate_count: int = Field(
        description="Numbers already in the campaign, or given twice in this upload."
    )
    invalid_count: int
    invalid: list[InvalidRow] = Field(
        description=f"The first {MAX_LISTED_INVALID} invalid rows (see invalid_count)."
    )


class ContactOut(BaseModel):
    id: str
    phone_number: str
    variables: dict[str, Any]
    timezone: str | None
    status: ContactStatus
    end_reason: str | None
    call_id: str | None
    created_at: datetime


class CampaignStarted(BaseModel):
    message: Literal["Campaign Dispatched Successfully"] = "Campaign Dispatched Successfully"
    contacts_dialed: int
    contacts_skipped_dnc: int


class CampaignState(BaseModel):
    status: CampaignStatus
    id: str


class LaunchBlocker(BaseModel):
    code: BlockerCode = Field(description='Stable; see the README, "Launch check".')
    message: str
    until: datetime | None = Field(
        default=None,
        description="Blockers that are a matter of time only (outside_calling_window, "
        "retries_not_due): when the campaign dials next. Absent otherwise.",
    )


class LaunchWarning(BaseModel):
    code: WarningCode = Field(description='Stable; see the README, "Launch check".')
    message: str


class LaunchCheckOut(BaseModel):
    ready: bool = Field(description="No blocker: the campaign would dial right now.")
    blockers: list[LaunchBlocker] = Field(
        description="Why the campaign would not dial right now. `start` refuses (409 "
        "not_ready) while any but outside_calling_window and retries_not_due stands."
    )
    warnings: list[LaunchWarning] = Field(
        description="What would make its calls less than they could be; never stops it."
    )
