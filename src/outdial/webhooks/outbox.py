"""The outbox: events are written in the transaction of the change they report, one delivery
row per subscribed endpoint, and sent afterwards by the delivery worker (`worker.py`)."""

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic_core import to_json
from sqlalchemy import event as orm_event
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from outdial.db import bulk_insert, one_of, utcnow
from outdial.ids import new_ids
from outdial.webhooks.models import DeliveryStatus, EndpointStatus, WebhookDelivery, WebhookEndpoint


class EventType(StrEnum):
    CALL_PARTICIPANT_UPDATED = "call.participant.updated"
    CALL_COMPLETED = "call.completed"
    BATCH_COMPLETED = "batch.completed"
    CAMPAIGN_STARTED = "campaign.started"
    CAMPAIGN_PAUSED = "campaign.paused"
    CAMPAIGN_RESUMED = "campaign.resumed"
    CAMPAIGN_COMPLETED = "campaign.completed"


ALL_EVENTS = "*"
"""An endpoint's `events` filter that takes every event type."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event to send to the tenant's endpoints (see `emit_events` for what to pass)."""

    tenant_id: str
    type: EventType
    data: Mapping[str, Any]
    ordering_key: str
    occurred_at: datetime


def event_body(event: NewEvent) -> str:
    """The bytes every endpoint receives for `event`: `{"type", "timestamp", "data"}`, as
    pydantic serialises JSON (`data` may hold datetimes: they come out as the API shows
    them), compact and in UTF-8. pydantic-core's serialiser, not `json.dumps`: half the cost,
    for two or three events a dial."""
    body = {"type": str(event.type), "timestamp": _timestamp(event.occurred_at), "data": event.data}
    return to_json(body).decode()


@functools.lru_cache(maxsize=256)
def _timestamp(at: datetime) -> str:
    # Cached: the events of one transaction mostly share their instant.
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def subscribed(filters: Sequence[str], event_type: str) -> bool:
    return ALL_EVENTS in filters or event_type in filters


@dataclass(slots=True)
class Subscriptions:
    """The enabled endpoints of some tenants, and the event types each takes."""

    by_tenant: dict[str, list[tuple[str, list[str]]]]

    def wants(self, tenant_id: str, event_type: EventType) -> bool:
        """Whether any endpoint of the tenant takes this type of event."""
        return any(subscribed(f, event_type) for _, f in self.by_tenant.get(tenant_id, ()))

    def endpoints(self, tenant_id: str, event_type: EventType) -> list[str]:
        return [e for e, f in self.by_tenant.get(tenant_id, ()) if subscribed(f, event_type)]


_KNOWN = "outdial.webhooks.subscriptions"


async def subscriptions(session: AsyncSession, *, tenant_ids: Collection[str]) -> Subscriptions:
    """The tenants' enabled endpoints, read once per transaction and tenant: the code that
    changes statuses asks before it builds an event, so a tenant without endpoints costs
    one small query per transaction, not an event's worth of work."""
    known: dict[str, list[tuple[str, list[str]]]] = session.sync_session.info.setdefault(_KNOWN, {})
    missing = set(tenant_ids) - known.keys()
    if missing:
        for tenant_id in missing:
            known[tenant_id] = []
        rows = await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.tenant_id, WebhookEndpoint.events).where(
                one_of(session, WebhookEndpoint.tenant_id, missing),
                WebhookEndpoint.status == EndpointStatus.ENABLED,
            )
        )
        for endpoint_id, tenant_id, filters in rows:
            known[tenant_id].append((endpoint_id, filters))
    return Subscriptions({t: known[t] for t in tenant_ids})


@orm_event.listens_for(Session, "after_commit")
@orm_event.listens_for(Session, "after_rollback")
def _forget_subscriptions(session: Session) -> None:
    session.info.pop(_KNOWN, None)


async def emit_events(session: AsyncSession, events: Sequence[NewEvent]) -> None:
    """Queue `events` for every enabled endpoint of their tenants subscribed to their types,
    in the caller's transaction (never committed here): they are sent once it commits and
    never if it rolls back. One query for the endpoints and one bulk insert, however many
    events; nothing is written for a tenant without endpoints.

    What to pass, per event type (`data` is what the API's GET answers at that moment, as
    JSON: `Model.model_dump(mode="json")`, or the same fields with datetimes left as such,
    which serialise alike; `occurred_at` is when the change happened):

    - `call.participant.updated`, on every participant status change: `data` is the
      participant as `GET /v1/calls/{id}` shows it (`ParticipantOut`; dialer/events.py's
      `participant_data` renders it from its columns) plus `"call_id"`; `ordering_key` the
      call id.
    - `call.completed`, when a call's last participant has ended: `data` is the call as
      `GET /v1/calls/{id}` answers it (`CallOut`, which carries the merged `post_call`);
      `ordering_key` the call id, so it follows the call's participant updates.
    - `batch.completed`, when a batch's last participant has ended: `data` is the batch's
      call as `GET /v1/calls/{id}` answers it (it carries `batch_id`); `ordering_key` the
      call id.
    - `campaign.started` / `.paused` / `.resumed` / `.completed`, on each transition: `data`
      is the campaign as `GET /v1/campaigns/{id}` answers it (`CampaignDetail`);
      `ordering_key` the campaign id.

    Each event gets an id (`evt_…`, sent as `webhook-id`: the same on every retry and for
    every endpoint) and each delivery its own row (`dlv_…` in the delivery log)."""
    if not events:
        return
    subs = await subscriptions(session, tenant_ids={event.tenant_id for event in events})
    now = utcnow()
    event_ids = new_ids("evt", len(events))
    rows: list[dict[str, Any]] = []
    for event, event_id in zip(events, event_ids, strict=True):
        targets = subs.endpoints(event.tenant_id, event.type)
        if not targets:
            continue
        payload = event_body(event)
        for endpoint_id in targets:
            rows.append(
                {
                    "endpoint_id": endpoint_id,
                    "event_id": event_id,
                    "event_type": str(event.type),
                    "ordering_key": event.ordering_key,
                    "payload": payload,
                    "status": str(DeliveryStatus.PENDING),
                    "holds_order": True,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    await bulk_insert(session, WebhookDelivery.__table__, rows)  # type: ignore[arg-type]
