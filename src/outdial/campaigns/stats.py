"""A campaign's figures: contacts per status, attempts made, contacts a person answered."""

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.statuses import ANSWERED_BY_PERSON
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.campaigns.schemas import CONTACT_STATUSES
from outdial.campaigns.statuses import FINAL_CONTACT
from outdial.dialer import jobs


@dataclass(frozen=True, slots=True)
class CampaignStats:
    counts: dict[str, int]
    attempts: int
    answered: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def progress(self) -> float:
        final = sum(self.counts[status] for status in FINAL_CONTACT)
        return final / self.total if self.total else 0.0


async def campaign_stats(session: AsyncSession, *, campaign: Campaign) -> CampaignStats:
    """Contacts per status, attempts made and contacts answered."""
    rows = await session.execute(
        select(CampaignContact.status, CampaignContact.end_reason, func.count())
        .where(CampaignContact.campaign_id == campaign.id)
        .group_by(CampaignContact.status, CampaignContact.end_reason)
    )
    counts = dict.fromkeys(CONTACT_STATUSES, 0)
    answered = 0
    for status, end_reason, count in rows:
        counts[status] = counts.get(status, 0) + count
        if end_reason in ANSWERED_BY_PERSON:
            answered += count
    attempts = await jobs.attempts_made(
        session, tenant_id=campaign.tenant_id, campaign_id=campaign.id
    )
    return CampaignStats(counts=counts, attempts=attempts, answered=answered)
