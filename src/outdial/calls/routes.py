from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import JSONResponse

from outdial.calls import service
from outdial.calls.schemas import (
    AttemptOut,
    BatchCreate,
    CallCreate,
    CallOut,
    CallQueued,
    CallSummary,
    ParticipantQueued,
    QueueStats,
)
from outdial.calls.statuses import CallStatus
from outdial.calls.views import call_out, room_name, summary_out
from outdial.dialer.models import DialAttempt
from outdial.error_handlers import error_responses
from outdial.idempotency.dependency import Idempotent
from outdial.keys.auth import AnyKey, SecretKey, Session
from outdial.pagination import Page, PageParams, page_of
from outdial.pagination_query import page_params
from outdial.telephony.registry import close_call_room

router = APIRouter(prefix="/calls", tags=["calls"], responses=error_responses(403))


def queued_out(result: service.QueuedCall) -> CallQueued:
    return CallQueued(
        id=result.id,
        room_name=room_name(result.id),
        status=result.status,
        batch_id=result.batch_id,
        queued=result.queued,
        participants=[
            ParticipantQueued.model_validate(p, from_attributes=True) for p in result.participants
        ],
    )


def attempt_out(a: DialAttempt) -> AttemptOut:
    return AttemptOut(
        id=a.id,
        participant_id=a.participant_id,
        attempt=a.attempt_no,
        status=a.status,
        provider=a.provider,
        provider_call_id=a.provider_call_id,
        from_number=a.from_number,
        to_number=a.to_number,
        created_at=a.created_at,
        dial_at=a.dial_at,
        placed_at=a.placed_at,
        answered_at=a.answered_at,
        answered_by=a.answered_by,
        ended_at=a.ended_at,
        end_reason=a.end_reason,
        talk_seconds=a.talk_seconds,
        checks=a.checks,
    )


@router.post(
    "/batch",
    status_code=202,
    response_model=CallQueued,
    responses=error_responses(400, 402, 404, 409, 422),
)
async def queue_batch(
    request: Request, body: BatchCreate, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Queue up to 500 PSTN recipients under one call session."""
    result = await service.queue_batch(
        session, settings=request.app.state.settings, principal=principal, data=body
    )
    return once.answer(queued_out(result), 202)


@router.post(
    "",
    status_code=202,
    response_model=CallQueued,
    responses={201: {"model": CallQueued}} | error_responses(400, 402, 404, 409, 422),
)
async def create_call(
    request: Request, body: CallCreate, session: Session, principal: AnyKey, once: Idempotent
) -> JSONResponse:
    """Create a call: 202 when PSTN participants are queued, 201 when all are WebRTC."""
    queued_status = 202 if any(p.transport == "pstn" for p in body.participants) else 201
    result = await service.create_call(
        session, settings=request.app.state.settings, principal=principal, data=body
    )
    return once.answer(queued_out(result), queued_status)


@router.get("/queue/stats", response_model=QueueStats)
async def queue_stats(session: Session, principal: SecretKey) -> QueueStats:
    """The tenant's dial queue: jobs waiting, active, completed and failed."""
    return QueueStats(**await service.queue_stats(session, tenant_id=principal.tenant_id))


@router.get("", response_model=Page[CallSummary])
async def list_calls(
    session: Session,
    principal: SecretKey,
    page: Annotated[PageParams, Depends(page_params)],
    batch_id: Annotated[str | None, Query(max_length=200)] = None,
    campaign_id: Annotated[str | None, Query(max_length=40)] = None,
    status: CallStatus | None = None,
) -> Page[CallSummary]:
    """List calls, newest last, filtered by batch, campaign or status."""
    calls = await service.list_calls(
        session,
        tenant_id=principal.tenant_id,
        page=page,
        batch_id=batch_id,
        campaign_id=campaign_id,
        status=status,
    )
    rows, cursor = page_of(calls, page, lambda c: c.id)
    return Page(data=[summary_out(c) for c in rows], next_cursor=cursor)


@router.get("/{call_id}", response_model=CallOut, responses=error_responses(404))
async def get_call(call_id: str, session: Session, principal: SecretKey) -> CallOut:
    """Fetch a call with every participant's status, attempts, timing and cost."""
    call = await service.get_call(session, tenant_id=principal.tenant_id, call_id=call_id)
    return call_out(call, await service.participants_of(session, call_id=call.id))


@router.get("/{call_id}/attempts", response_model=Page[AttemptOut], responses=error_responses(404))
async def list_attempts(
    call_id: str,
    session: Session,
    principal: SecretKey,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[AttemptOut]:
    """List a call's dial attempts, oldest first, each with the checks that allowed it."""
    call = await service.get_call(session, tenant_id=principal.tenant_id, call_id=call_id)
    attempts = await service.attempts_of(session, call_id=call.id, page=page)
    rows, cursor = page_of(attempts, page, lambda a: a.id)
    return Page(data=[attempt_out(a) for a in rows], next_cursor=cursor)


@router.post("/{call_id}/end", response_model=CallOut, responses=error_responses(404))
async def end_call(
    call_id: str,
    request: Request,
    background: BackgroundTasks,
    session: Session,
    principal: SecretKey,
) -> CallOut:
    """End a call: cancel what is still queued, hang up what is live."""
    call = await service.end_call(session, tenant_id=principal.tenant_id, call_id=call_id)
    # Once the end is committed (background tasks run after the response): where calls are
    # rooms, the room goes, and everyone in it with it.
    background.add_task(close_call_room, request.app.state.settings, room_name(call.id))
    return call_out(call, await service.participants_of(session, call_id=call.id))
