"""The state machines of campaigns and their contacts (seed 001), with their transitions."""

from enum import StrEnum


class CampaignStatus(StrEnum):
    """draft → running → completed, and running ⇄ paused."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"


class PausedReason(StrEnum):
    """Why a campaign is paused: someone paused it, or it paused itself because its
    abandonment rate crossed the limit (campaigns/abandonment.py)."""

    REQUESTED = "requested"
    ABANDONMENT_RATE = "abandonment_rate"


CAMPAIGN_TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    # A start with no pending contact completes at once.
    CampaignStatus.DRAFT: frozenset({CampaignStatus.RUNNING, CampaignStatus.COMPLETED}),
    CampaignStatus.RUNNING: frozenset({CampaignStatus.PAUSED, CampaignStatus.COMPLETED}),
    # A resume with nothing left to dial completes at once.
    CampaignStatus.PAUSED: frozenset({CampaignStatus.RUNNING, CampaignStatus.COMPLETED}),
    CampaignStatus.COMPLETED: frozenset(),
}


class ContactStatus(StrEnum):
    """pending → dialed → completed | failed, or pending → skipped_dnc."""

    PENDING = "pending"
    DIALED = "dialed"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED_DNC = "skipped_dnc"


FINAL_CONTACT = frozenset(
    {ContactStatus.COMPLETED, ContactStatus.FAILED, ContactStatus.SKIPPED_DNC}
)

CONTACT_TRANSITIONS: dict[ContactStatus, frozenset[ContactStatus]] = {
    # Dialed; skipped by the scrub at start or a DNC re-check before any dial; failed when
    # its queued call is canceled.
    ContactStatus.PENDING: frozenset(
        {ContactStatus.DIALED, ContactStatus.SKIPPED_DNC, ContactStatus.FAILED}
    ),
    # Back to pending when its only attempt was never received by the provider.
    ContactStatus.DIALED: frozenset(
        {ContactStatus.PENDING, ContactStatus.COMPLETED, ContactStatus.FAILED}
    ),
    ContactStatus.COMPLETED: frozenset(),
    ContactStatus.FAILED: frozenset(),
    ContactStatus.SKIPPED_DNC: frozenset(),
}
