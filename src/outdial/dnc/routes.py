from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from outdial.dnc import service
from outdial.dnc.models import DncEntry
from outdial.dnc.schemas import (
    DncBatch,
    DncBatchResult,
    DncCheck,
    DncCheckItem,
    DncCheckResult,
    DncCreate,
    DncOut,
)
from outdial.errors import error_responses
from outdial.idempotency import idempotent
from outdial.keys.auth import SecretKey, Session
from outdial.pagination import Page, PageParams, page_of, page_params

router = APIRouter(prefix="/dnc", tags=["do-not-call"], responses=error_responses(403))


def entry_out(entry: DncEntry) -> DncOut:
    return DncOut.model_validate(entry, from_attributes=True)


@router.post("", response_model=DncOut, responses={201: {"model": DncOut}})
async def add_number(
    request: Request, body: DncCreate, session: Session, principal: SecretKey
) -> JSONResponse:
    """Put a number on the do-not-call list (201 if new, 200 if it was already there; a
    `reason` sent replaces the one it had)."""
    listed = await service.blocked_numbers(
        session, tenant_id=principal.tenant_id, phone_numbers=[body.phone_number]
    )

    async def upsert() -> DncOut:
        await service.add_numbers(
            session,
            tenant_id=principal.tenant_id,
            phone_numbers=[body.phone_number],
            reason=body.reason,
        )
        entry = await service.get_entry(
            session, tenant_id=principal.tenant_id, phone_number=body.phone_number
        )
        if body.reason is not None and entry.reason != body.reason:
            entry.reason = body.reason
            await session.flush()
        return entry_out(entry)

    return await idempotent(
        request,
        session,
        tenant_id=principal.tenant_id,
        status_code=200 if listed else 201,
        create=upsert,
    )


@router.post("/batch", response_model=DncBatchResult)
async def add_numbers(
    request: Request, body: DncBatch, session: Session, principal: SecretKey
) -> JSONResponse:
    """Put up to 1,000 numbers on the do-not-call list."""

    async def add() -> DncBatchResult:
        added = await service.add_numbers(
            session,
            tenant_id=principal.tenant_id,
            phone_numbers=body.phone_numbers,
            reason=body.reason,
        )
        return DncBatchResult(added=added, already_listed=len(set(body.phone_numbers)) - added)

    return await idempotent(
        request, session, tenant_id=principal.tenant_id, status_code=200, create=add
    )


@router.post("/check", response_model=DncCheckResult)
async def check_numbers(body: DncCheck, session: Session, principal: SecretKey) -> DncCheckResult:
    """Tell, for up to 500 numbers, which are on the do-not-call list."""
    blocked = await service.blocked_numbers(
        session, tenant_id=principal.tenant_id, phone_numbers=body.phone_numbers
    )
    return DncCheckResult(
        results=[DncCheckItem(phone_number=n, blocked=n in blocked) for n in body.phone_numbers]
    )


@router.get("", response_model=Page[DncOut])
async def list_entries(
    session: Session, principal: SecretKey, page: Annotated[PageParams, Depends(page_params)]
) -> Page[DncOut]:
    """List the do-not-call list."""
    entries = await service.list_entries(session, tenant_id=principal.tenant_id, page=page)
    rows, cursor = page_of(entries, page, lambda e: e.phone_number)
    return Page(data=[entry_out(e) for e in rows], next_cursor=cursor)


@router.delete("/{phone_number}", status_code=204, responses=error_responses(404))
async def remove_number(phone_number: str, session: Session, principal: SecretKey) -> Response:
    """Take a number off the do-not-call list."""
    await service.remove_number(session, tenant_id=principal.tenant_id, phone_number=phone_number)
    return Response(status_code=204)
