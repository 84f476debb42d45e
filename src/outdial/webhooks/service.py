from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.config import Settings
from outdial.db import utcnow
from outdial.errors import Conflict, NotFound, ValidationFailed
from outdial.ids import new_id
from outdial.pagination import PageParams, paginate
from outdial.signing import new_secret
from outdial.webhooks.addresses import check_url
from outdial.webhooks.models import (
    DeliveryStatus,
    DisabledReason,
    EndpointStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from outdial.webhooks.schemas import WebhookCreate, WebhookUpdate

DELIVERY_PREFIX = "dlv_"


def delivery_id(seq: int) -> str:
    return f"{DELIVERY_PREFIX}{seq:012x}"


def _delivery_seq(public_id: str) -> int | None:
    digits = public_id.removeprefix(DELIVERY_PREFIX)
    if digits == public_id or not 12 <= len(digits) <= 16:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


def _not_found(webhook_id: str) -> NotFound:
    return NotFound(f"No webhook {webhook_id} for this tenant.", code="webhook_not_found")


def lease_seconds(settings: Settings) -> float:
    """How long a claimed delivery stays with its delivery process: twice the send timeout,
    so that a live process always writes its result back before another may take it."""
    return 2 * settings.webhook_timeout_seconds


async def get_webhook(session: AsyncSession, *, tenant_id: str, webhook_id: str) -> WebhookEndpoint:
    endpoint = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == webhook_id, WebhookEndpoint.tenant_id == tenant_id
        )
    )
    if endpoint is None:
        raise _not_found(webhook_id)
    return endpoint


async def create_webhook(
    session: AsyncSession, *, settings: Settings, tenant_id: str, data: WebhookCreate
) -> WebhookEndpoint:
    await check_url(data.url, allow_private=settings.webhook_allow_private_urls)
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=new_id("wh"),
        tenant_id=tenant_id,
        url=data.url,
        description=data.description,
        events=data.events,
        secret=new_secret(),
        status=EndpointStatus.ENABLED,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def update_webhook(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: str,
    webhook_id: str,
    data: WebhookUpdate,
) -> WebhookEndpoint:
    endpoint = await get_webhook(session, tenant_id=tenant_id, webhook_id=webhook_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        await check_url(changes["url"], allow_private=settings.webhook_allow_private_urls)
        endpoint.url = changes["url"]
    if changes.get("events") is not None:
        endpoint.events = changes["events"]
    if "description" in changes:
        endpoint.description = changes["description"]
    status = changes.get("status")
    if status == EndpointStatus.ENABLED:
        await enable(session, endpoint=endpoint, lease=timedelta(seconds=lease_seconds(settings)))
    elif status == EndpointStatus.DISABLED and endpoint.status == EndpointStatus.ENABLED:
        await disable(session, endpoint_ids=[endpoint.id], reason=DisabledReason.MANUAL)
        await session.refresh(endpoint)
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint


async def enable(session: AsyncSession, *, endpoint: WebhookEndpoint, lease: timedelta) -> None:
    """Enable `endpoint` with its failure clock reset, and make the deliveries it held back
    due now. One still marked sending may be with a delivery process that has yet to write
    its result, so it is treated as leased from now rather than sent a second time at once."""
    now = utcnow()
    endpoint.status = EndpointStatus.ENABLED
    endpoint.disabled_reason = None
    endpoint.failing_since = None
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.finished_at.is_(None),
            WebhookDelivery.next_attempt_at.is_(None),
        )
        .values(
            next_attempt_at=case(
                (WebhookDelivery.status == DeliveryStatus.SENDING, now + lease), else_=now
            )
        )
    )


async def disable(
    session: AsyncSession, *, endpoint_ids: list[str], reason: DisabledReason
) -> None:
    """Disable endpoints that are enabled; their unfinished deliveries wait (due at no time)
    until they are enabled again."""
    if not endpoint_ids:
        return
    disabled = (
        await session.scalars(
            update(WebhookEndpoint)
            .where(
                WebhookEndpoint.id.in_(endpoint_ids),
                WebhookEndpoint.status == EndpointStatus.ENABLED,
            )
            .values(status=EndpointStatus.DISABLED, disabled_reason=reason, updated_at=utcnow())
            .returning(WebhookEndpoint.id)
        )
    ).all()
    if disabled:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id.in_(disabled), WebhookDelivery.finished_at.is_(None))
            .values(next_attempt_at=None)
        )


async def delete_webhook(session: AsyncSession, *, tenant_id: str, webhook_id: str) -> None:
    """Delete an endpoint with its deliveries and their attempts."""
    endpoint = await get_webhook(session, tenant_id=tenant_id, webhook_id=webhook_id)
    deliveries = select(WebhookDelivery.seq).where(WebhookDelivery.endpoint_id == endpoint.id)
    await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_seq.in_(deliveries)))
    await session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    await session.delete(endpoint)
    await session.flush()


async def list_webhooks(
    session: AsyncSession, *, tenant_id: str, page: PageParams
) -> list[WebhookEndpoint]:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    return list(await session.scalars(paginate(stmt, WebhookEndpoint.id, page)))


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


async def list_deliveries(
    session: AsyncSession,
    *,
    tenant_id: str,
    webhook_id: str,
    page: PageParams,
    status: DeliveryStatus | None = None,
) -> list[DeliveryLog]:
    """An endpoint's deliveries, oldest first, each with its attempts."""
    endpoint = await get_webhook(session, tenant_id=tenant_id, webhook_id=webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if page.after is not None:
        after = _delivery_seq(page.after)
        if after is None:
            raise ValidationFailed(f"{page.after!r} is not a cursor of this list.")
        stmt = stmt.where(WebhookDelivery.seq > after)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    deliveries = list(
        await session.scalars(stmt.order_by(WebhookDelivery.seq).limit(page.limit + 1))
    )
    attempts: dict[int, list[WebhookAttempt]] = {d.seq: [] for d in deliveries}
    if deliveries:
        for attempt in await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_seq.in_(list(attempts)))
            .order_by(WebhookAttempt.delivery_seq, WebhookAttempt.attempt_no)
        ):
            attempts[attempt.delivery_seq].append(attempt)
    return [DeliveryLog(d, attempts[d.seq]) for d in deliveries]


async def retry_delivery(
    session: AsyncSession, *, tenant_id: str, webhook_id: str, delivery_id: str
) -> DeliveryLog:
    """Make a delivery due now, whatever its state (delivered, failed or waiting for a retry);
    it no longer holds back later deliveries of its ordering key."""
    endpoint = await get_webhook(session, tenant_id=tenant_id, webhook_id=webhook_id)
    seq = _delivery_seq(delivery_id)
    delivery = (
        None
        if seq is None
        else await session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.seq == seq, WebhookDelivery.endpoint_id == endpoint.id
            )
        )
    )
    if delivery is None:
        raise NotFound(
            f"No delivery {delivery_id} for webhook {webhook_id}.", code="delivery_not_found"
        )
    if endpoint.status != EndpointStatus.ENABLED:
        raise Conflict(
            'This webhook is disabled: enable it (PUT {"status": "enabled"}) first.',
            code="webhook_disabled",
        )
    if delivery.status == DeliveryStatus.SENDING:
        raise Conflict(
            "This delivery is being sent right now; its attempt is in the log shortly.",
            code="delivery_in_progress",
        )
    delivery.status = DeliveryStatus.PENDING
    delivery.holds_order = False
    delivery.next_attempt_at = utcnow()
    delivery.finished_at = None
    await session.flush()
    attempts = list(
        await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_seq == delivery.seq)
            .order_by(WebhookAttempt.attempt_no)
        )
    )
    return DeliveryLog(delivery, attempts)
