"""Campaigns as the API shows them: what GET /v1/campaigns/{id} answers, and what the
campaign events carry."""

from sqlalchemy.ext.asyncio import AsyncSession

from outdial.campaigns import abandonment
from outdial.campaigns.models import Campaign
from outdial.campaigns.schemas import (
    AbandonmentOut,
    CampaignDetail,
    CampaignOut,
    CampaignSettings,
    ContactCounts,
)
from outdial.campaigns.stats import campaign_stats
from outdial.db import utcnow


def campaign_out(campaign: Campaign) -> CampaignOut:
    return CampaignOut(
        id=campaign.id,
        name=campaign.name,
        agent_id=campaign.agent_id,
        call_from_number=campaign.call_from_number,
        status=campaign.status,  # type: ignore[arg-type]
        paused_reason=campaign.paused_reason,  # type: ignore[arg-type]
        settings=CampaignSettings.model_validate(campaign.settings),
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
        started_at=campaign.started_at,
        completed_at=campaign.completed_at,
    )


async def campaign_detail(session: AsyncSession, campaign: Campaign) -> CampaignDetail:
    """The campaign with its contacts per status, attempts, answers, progress and
    abandonment rate."""
    stats = await campaign_stats(session, campaign=campaign)
    figures = await abandonment.abandonment_of(
        session, campaign_ids={campaign.id}, today=utcnow().date()
    )
    return CampaignDetail(
        **campaign_out(campaign).model_dump(),
        contacts=ContactCounts(total=stats.total, **stats.counts),
        attempts=stats.attempts,
        answered=stats.answered,
        progress=stats.progress,
        abandonment=abandonment_out(figures[campaign.id]),
    )


def abandonment_out(figure: abandonment.Abandonment) -> AbandonmentOut:
    return AbandonmentOut(
        rate=figure.rate,
        answered=figure.answered,
        abandoned=figure.abandoned,
        window_days=abandonment.WINDOW_DAYS,
        limit=abandonment.LIMIT_PERCENT / 100,
        min_answered=abandonment.MIN_ANSWERED,
    )
