from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from outdial.billing.service import from_micros
from outdial.calls import service
from outdial.calls.models import Call, Participant
from outdial.calls.schemas import (
    BatchCreate,
    CallCreate,
    CallOut,
    CallQueued,
    CallSummary,
    ParticipantOut,
    ParticipantQueued,
    QueueStats,
)
from outdial.errors import error_responses
from outdial.idempotency import idempotent
from outdial.keys.auth import AnyKey, SecretKey, Session
from outdial.pagination import Page, PageParams, page_of, page_params

router = APIRouter(prefix="/calls", tags=["calls"], responses=error_responses(403))

CallStatus = Literal["queued", "in_progress", "completed", "canceled"]


def queued_out(result: service.QueuedCall) -> CallQueued:
    call = result.call
    return CallQueued(
        id=call.id,
        room_name=service.room_name(call.id),
        status=call.status,
        batch_id=call.batch_id,
        queued=result.queued,
        participants=[
            ParticipantQueued.model_validate(p, from_attributes=True) for p in result.participants
        ],
    )


def summary_out(call: Call) -> CallSummary:
    return CallSummary(
        id=call.id,
        room_name=service.room_name(call.id),
        kind=call.kind,
        status=call.status,
        agent_id=call.agent_id,
        batch_id=call.batch_id,
        campaign_id=call.campaign_id,
        from_number=call.from_number,
        metadata=call.call_metadata,
        variables=call.variables,
        post_call=call.post_call,
        calling_window=call.calling_window,
        retry=call.retry,
        ring_timeout_seconds=call.ring_timeout_seconds,
        created_at=call.created_at,
        ended_at=call.ended_at,
    )


def participant_out(p: Participant) -> ParticipantOut:
    return ParticipantOut(
        id=p.id,
        transport=p.transport,
        identity=p.identity,
        from_number=p.from_number,
        status=p.status,
        end_reason=p.end_reason,
        attempts=p.attempts,
        telephony_leg_id=p.telephony_leg_id,
        job_id=p.job_id,
        metadata=p.participant_metadata,
        duration_seconds=p.duration_seconds,
        cost=from_micros(p.cost_micros),
        created_at=p.created_at,
        dialed_at=p.dialed_at,
        answered_at=p.answered_at,
        ended_at=p.ended_at,
    )


def call_out(call: Call, participants: list[Participant]) -> CallOut:
    counts: dict[str, int] = {}
    for p in participants:
        counts[p.status] = counts.get(p.status, 0) + 1
    return CallOut(
        **summary_out(call).model_dump(),
        participant_counts=counts,
        participants=[participant_out(p) for p in participants],
    )


@router.post(
    "/batch",
    status_code=202,
    response_model=CallQueued,
    responses=error_responses(400, 402, 404, 409, 422),
)
async def queue_batch(
    request: Request, body: BatchCreate, session: Session, principal: SecretKey
) -> JSONResponse:
    """Queue up to 500 PSTN recipients under one call session."""

    async def create() -> CallQueued:
        result = await service.queue_batch(
            session, settings=request.app.state.settings, principal=principal, data=body
        )
        return queued_out(result)

    return await idempotent(
        request, session, tenant_id=principal.tenant_id, status_code=202, create=create
    )


@router.post(
    "",
    status_code=202,
    response_model=CallQueued,
    responses={201: {"model": CallQueued}} | error_responses(400, 402, 404, 409, 422),
)
async def create_call(
    request: Request, body: CallCreate, session: Session, principal: AnyKey
) -> JSONResponse:
    """Create a call: 202 when PSTN participants are queued, 201 when all are WebRTC."""
    queued_status = 202 if any(p.transport == "pstn" for p in body.participants) else 201

    async def create() -> CallQueued:
        result = await service.create_call(
            session, settings=request.app.state.settings, principal=principal, data=body
        )
        return queued_out(result)

    return await idempotent(
        request, session, tenant_id=principal.tenant_id, status_code=queued_status, create=create
    )


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


@router.post("/{call_id}/end", response_model=CallOut, responses=error_responses(404))
async def end_call(call_id: str, session: Session, principal: SecretKey) -> CallOut:
    """End a call: cancel what is still queued, hang up what is live."""
    call = await service.end_call(session, tenant_id=principal.tenant_id, call_id=call_id)
    return call_out(call, await service.participants_of(session, call_id=call.id))
