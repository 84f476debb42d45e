import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from outdial.error_handlers import error_responses
from outdial.idempotency.dependency import Idempotent
from outdial.keys.auth import SecretKey, Session
from outdial.pagination import Page, PageParams, page_of
from outdial.pagination_query import page_params
from outdial.webhooks import service
from outdial.webhooks.models import DeliveryStatus, WebhookEndpoint
from outdial.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookUpdate,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=error_responses(403))


def webhook_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut.model_validate(endpoint, from_attributes=True)


def delivery_out(log: service.DeliveryLog) -> DeliveryOut:
    delivery = log.delivery
    return DeliveryOut(
        id=service.delivery_id(delivery.seq),
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempt_count=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
        event=json.loads(delivery.payload),
        attempts=[
            AttemptOut(
                attempt=a.attempt_no,
                started_at=a.started_at,
                duration_ms=a.duration_ms,
                status_code=a.status_code,
                error=a.error,
                response=a.response,
                next_retry_at=a.next_attempt_at,
            )
            for a in log.attempts
        ],
    )


@router.post(
    "", status_code=201, response_model=WebhookCreated, responses=error_responses(400, 422)
)
async def create_webhook(
    request: Request, body: WebhookCreate, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Create an endpoint that events are sent to; its signing `secret` is shown only here."""
    endpoint = await service.create_webhook(
        session, settings=request.app.state.settings, tenant_id=principal.tenant_id, data=body
    )
    created = WebhookCreated(**webhook_out(endpoint).model_dump(), secret=endpoint.secret)
    return once.answer(created, 201)


@router.get("", response_model=Page[WebhookOut])
async def list_webhooks(
    session: Session, principal: SecretKey, page: Annotated[PageParams, Depends(page_params)]
) -> Page[WebhookOut]:
    """List the tenant's webhook endpoints."""
    endpoints = await service.list_webhooks(session, tenant_id=principal.tenant_id, page=page)
    rows, cursor = page_of(endpoints, page, lambda e: e.id)
    return Page(data=[webhook_out(e) for e in rows], next_cursor=cursor)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=error_responses(404))
async def get_webhook(webhook_id: str, session: Session, principal: SecretKey) -> WebhookOut:
    """Fetch one webhook endpoint."""
    endpoint = await service.get_webhook(
        session, tenant_id=principal.tenant_id, webhook_id=webhook_id
    )
    return webhook_out(endpoint)


@router.put("/{webhook_id}", response_model=WebhookOut, responses=error_responses(404))
async def update_webhook(
    request: Request, webhook_id: str, body: WebhookUpdate, session: Session, principal: SecretKey
) -> WebhookOut:
    """Change an endpoint; fields left out keep their values. `{"status": "enabled"}`
    re-enables it."""
    endpoint = await service.update_webhook(
        session,
        settings=request.app.state.settings,
        tenant_id=principal.tenant_id,
        webhook_id=webhook_id,
        data=body,
    )
    return webhook_out(endpoint)


@router.delete("/{webhook_id}", status_code=204, responses=error_responses(404))
async def delete_webhook(webhook_id: str, session: Session, principal: SecretKey) -> Response:
    """Delete an endpoint and its delivery log; nothing more is sent to it."""
    await service.delete_webhook(session, tenant_id=principal.tenant_id, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries", response_model=Page[DeliveryOut], responses=error_responses(404)
)
async def list_deliveries(
    webhook_id: str,
    session: Session,
    principal: SecretKey,
    page: Annotated[PageParams, Depends(page_params)],
    status: Annotated[DeliveryStatus | None, Query()] = None,
) -> Page[DeliveryOut]:
    """An endpoint's deliveries, oldest first, each with every attempt made."""
    logs = await service.list_deliveries(
        session, tenant_id=principal.tenant_id, webhook_id=webhook_id, page=page, status=status
    )
    rows, cursor = page_of(logs, page, lambda log: service.delivery_id(log.delivery.seq))
    return Page(data=[delivery_out(log) for log in rows], next_cursor=cursor)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryOut,
    responses=error_responses(404, 409),
)
async def retry_delivery(
    webhook_id: str, delivery_id: str, session: Session, principal: SecretKey
) -> DeliveryOut:
    """Send a delivery again now, whatever became of it before."""
    log = await service.retry_delivery(
        session, tenant_id=principal.tenant_id, webhook_id=webhook_id, delivery_id=delivery_id
    )
    return delivery_out(log)
