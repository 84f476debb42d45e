from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from outdial.calls.schemas import (
    DEFAULT_RING_TIMEOUT,
    MIN_RING_TIMEOUT,
    CallingWindow,
    RetryPolicy,
)
from outdial.phones import E164

MAX_JSON_CONTACTS = 10_000
MAX_LISTED_INVALID = 100
"""An answer lists at most this many invalid rows (and says how many there were), so that a
bad million-row file does not make a huge answer."""

CampaignStatus = Literal["draft", "running", "paused", "completed"]
ContactStatus = Literal["pending", "dialed", "completed", "failed", "skipped_dnc"]
CONTACT_STATUSES: tuple[ContactStatus, ...] = (
    "pending",
    "dialed",
    "completed",
    "failed",
    "skipped_dnc",
)


class CampaignSettings(BaseModel):
    """How a campaign is dialed, within the tenant's own limits."""

    model_config = ConfigDict(extra="forbid")

    max_concurrency: int = Field(default=10, ge=1, le=10_000)
    calls_per_second: float = Field(default=1.0, gt=0, le=1000)
    calling_window: CallingWindow = Field(default_factory=CallingWindow)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    ring_timeout_seconds: int = Field(default=DEFAULT_RING_TIMEOUT, ge=MIN_RING_TIMEOUT, le=600)


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    name: str = Field(min_length=1, max_length=200)
    call_from_number: E164
    settings: CampaignSettings = Field(default_factory=CampaignSettings)


class CampaignUpdate(BaseModel):
    """Fields left out keep their values; `settings` replaces the settings it names."""

    model_config = ConfigDict(extra="forbid")

    agent_id: UUID | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    call_from_number: E164 | None = None
    settings: dict[str, Any] | None = Field(
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
    settings: CampaignSettings
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class CampaignDetail(CampaignOut):
    contacts: ContactCounts
    attempts: int = Field(description="Dial attempts made so far, retries included.")
    answered: int = Field(description="Contacts whose call a person answered.")
    progress: float = Field(
        description="Contacts in a final state (completed, failed, skipped_dnc) over all "
        "contacts, from 0 to 1."
    )


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: str = Field(max_length=32, description="E.164, with or without the +.")
    variables: dict[str, Any] = Field(default_factory=dict)
    timezone: str | None = Field(default=None, max_length=64, description="An IANA zone.")


class ContactsUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: list[ContactIn] = Field(min_length=1, max_length=MAX_JSON_CONTACTS)


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
