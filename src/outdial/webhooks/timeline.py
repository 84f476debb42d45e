"""A call's webhook deliveries on its dashboard timeline: each event sent for the call, to
which endpoint, and how its attempts went (the dashboard's timeline hook; wiring.py plugs it)."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.dashboard.service import TimelineEntry
from outdial.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

SHOWN = 200
"""At most this many deliveries of one call are shown: a timeline, not the delivery log."""


async def call_deliveries(
    session: AsyncSession, tenant_id: str, call_id: str
) -> Sequence[TimelineEntry]:
    """The deliveries of the call's events to the tenant's endpoints, oldest first."""
    rows = await session.execute(
        select(WebhookDelivery, WebhookEndpoint.url)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.ordering_key == call_id, WebhookEndpoint.tenant_id == tenant_id)
        .order_by(WebhookDelivery.seq)
        .limit(SHOWN)
    )
    return [_entry(delivery, url) for delivery, url in rows]


def _entry(delivery: WebhookDelivery, url: str) -> TimelineEntry:
    tries = f"{delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
    if delivery.status == DeliveryStatus.DELIVERED:
        outcome = f"delivered after {tries}"
    elif delivery.finished_at is not None:
        outcome = f"{delivery.status} after {tries}"
    else:
        outcome = f"{delivery.status} ({tries} so far)"
    return TimelineEntry(
        at=delivery.finished_at or delivery.created_at,
        kind="delivery",
        title=f"webhook {delivery.event_type}: {outcome}",
        detail=url,
    )
