"""The webhook events of campaigns' transitions (API.md, "Events"): written by the code that
makes each transition, in its transaction."""

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.campaigns.models import Campaign
from outdial.campaigns.views import campaign_detail
from outdial.db import utcnow
from outdial.webhooks.outbox import EventType, NewEvent, emit_events, subscriptions


async def campaigns_moved(
    session: AsyncSession, *, moved: Collection[tuple[str, str]], to: EventType
) -> None:
    """`campaign.started`, `.paused`, `.resumed` or `.completed` for these (campaign id,
    tenant id), to the tenants that take it: each campaign as `GET /v1/campaigns/{id}`
    answers it now."""
    if not moved:
        return
    subs = await subscriptions(session, tenant_ids={tenant for _, tenant in moved})
    wanted = [campaign_id for campaign_id, tenant in moved if subs.wants(tenant, to)]
    if not wanted:
        return
    campaigns = await session.scalars(
        select(Campaign).where(Campaign.id.in_(wanted)).execution_options(populate_existing=True)
    )
    now = utcnow()
    await emit_events(
        session,
        [
            NewEvent(
                tenant_id=campaign.tenant_id,
                type=to,
                data=(await campaign_detail(session, campaign)).model_dump(mode="json"),
                ordering_key=campaign.id,
                occurred_at=now,
            )
            for campaign in campaigns
        ],
    )
