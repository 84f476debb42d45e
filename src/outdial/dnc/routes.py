from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from outdial.csvstream import MAX_RECORD_BYTES
from outdial.dnc import imports, service
from outdial.dnc.models import DncEntry
from outdial.dnc.schemas import (
    DncBatch,
    DncBatchResult,
    DncCheck,
    DncCheckItem,
    DncCheckResult,
    DncCreate,
    DncImported,
    DncOut,
)
from outdial.error_handlers import ErrorResponse, error_responses
from outdial.errors import OutdialError
from outdial.idempotency.dependency import Idempotent, key_of
from outdial.keys.auth import SecretKey, Session
from outdial.pagination import Page, PageParams, page_of
from outdial.pagination_query import page_params

router = APIRouter(prefix="/dnc", tags=["do-not-call"], responses=error_responses(403))


def entry_out(entry: DncEntry) -> DncOut:
    return DncOut.model_validate(entry, from_attributes=True)


@router.post("", response_model=DncOut, responses={201: {"model": DncOut}})
async def add_number(
    body: DncCreate, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Put a number on the do-not-call list (201 if new, 200 if it was already there; a
    `reason` sent replaces the one it had)."""
    listed = await service.blocked_numbers(
        session, tenant_id=principal.tenant_id, phone_numbers=[body.phone_number]
    )

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
    return once.answer(entry_out(entry), 200 if listed else 201)


@router.post("/batch", response_model=DncBatchResult)
async def add_numbers(
    body: DncBatch, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Put up to 1,000 numbers on the do-not-call list."""
    added = await service.add_numbers(
        session,
        tenant_id=principal.tenant_id,
        phone_numbers=body.phone_numbers,
        reason=body.reason,
    )
    already = len(set(body.phone_numbers)) - added
    return once.answer(DncBatchResult(added=added, already_listed=already), 200)


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "UTF-8 CSV of any size, streamed: a header row naming a "
                    "phone_number column (E.164, the + optional) and optionally a reason "
                    f"column; other columns are ignored. A record may hold {MAX_RECORD_BYTES:,} "
                    "bytes at most.",
                }
            }
        },
    }
}


@router.post(
    "/import",
    response_model=DncImported,
    responses={
        **error_responses(400, 409, 422),
        415: {"model": ErrorResponse, "description": "The body is not text/csv."},
    },
    openapi_extra=_IMPORT_BODY,
)
async def import_numbers(request: Request, session: Session, principal: SecretKey) -> JSONResponse:
    """Import a CSV file of any size onto the do-not-call list (committed a chunk at a time)."""
    _require_csv(request.headers.get("content-type", ""))
    key = key_of(request)
    imported = await imports.import_csv(
        session,
        tenant_id=principal.tenant_id,
        body=request.stream(),
        idempotency_key=key,
        ttl=timedelta(seconds=request.app.state.settings.idempotency_ttl_seconds),
    )
    headers = {"Idempotent-Replayed": "true"} if imported.replayed else None
    return JSONResponse(imported.answer.model_dump(mode="json"), headers=headers)


def _require_csv(content_type: str) -> None:
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    charsets = [p.split("=", 1)[1].strip('"') for p in parameters if p.startswith("charset=")]
    if media_type != "text/csv" or any(c not in ("utf-8", "utf8") for c in charsets):
        raise OutdialError(
            f"POST /v1/dnc/import takes text/csv in UTF-8, not {content_type or 'no body type'!r}.",
            code="unsupported_media_type",
            status_code=415,
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
