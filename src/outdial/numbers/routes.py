from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from outdial.error_handlers import error_responses
from outdial.idempotency.dependency import Idempotent
from outdial.keys.auth import SecretKey, Session
from outdial.numbers import service
from outdial.numbers.models import PhoneNumber
from outdial.numbers.schemas import NumberCreate, NumberOut, NumberUpdate
from outdial.pagination import Page, PageParams, page_of
from outdial.pagination_query import page_params

Force = Annotated[
    bool,
    Query(
        description="Release it even though queued calls or started campaigns dial from it: "
        "that work ends `not_permitted` (live calls finish)."
    ),
]

router = APIRouter(prefix="/numbers", tags=["numbers"], responses=error_responses(403))


def number_out(number: PhoneNumber) -> NumberOut:
    return NumberOut.model_validate(number, from_attributes=True)


@router.post(
    "", status_code=201, response_model=NumberOut, responses=error_responses(400, 409, 422)
)
async def register_number(
    body: NumberCreate, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Register a caller ID the tenant owns."""
    number = await service.register_number(session, tenant_id=principal.tenant_id, data=body)
    return once.answer(number_out(number), 201)


@router.get("", response_model=Page[NumberOut])
async def list_numbers(
    session: Session, principal: SecretKey, page: Annotated[PageParams, Depends(page_params)]
) -> Page[NumberOut]:
    """List the tenant's caller IDs."""
    numbers = await service.list_numbers(session, tenant_id=principal.tenant_id, page=page)
    rows, cursor = page_of(numbers, page, lambda n: n.phone_number)
    return Page(data=[number_out(n) for n in rows], next_cursor=cursor)


@router.put("/{phone_number}", response_model=NumberOut, responses=error_responses(400, 404, 409))
async def update_number(
    phone_number: str, body: NumberUpdate, session: Session, principal: SecretKey
) -> NumberOut:
    """Change a caller ID's label, or make it the tenant's default caller ID."""
    number = await service.update_number(
        session, tenant_id=principal.tenant_id, phone_number=phone_number, data=body
    )
    return number_out(number)


@router.delete("/{phone_number}", status_code=204, responses=error_responses(404, 409))
async def delete_number(
    phone_number: str, session: Session, principal: SecretKey, force: Force = False
) -> Response:
    """Release a caller ID; 409 `number_in_use` while work dials from it, unless forced."""
    await service.delete_number(
        session, tenant_id=principal.tenant_id, phone_number=phone_number, force=force
    )
    return Response(status_code=204)
