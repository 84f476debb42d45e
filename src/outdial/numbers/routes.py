from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from outdial.errors import error_responses
from outdial.idempotency import idempotent
from outdial.keys.auth import SecretKey, Session
from outdial.numbers import service
from outdial.numbers.models import PhoneNumber
from outdial.numbers.schemas import NumberCreate, NumberOut
from outdial.pagination import Page, PageParams, page_of, page_params

router = APIRouter(prefix="/numbers", tags=["numbers"], responses=error_responses(403))


def number_out(number: PhoneNumber) -> NumberOut:
    return NumberOut.model_validate(number, from_attributes=True)


@router.post(
    "", status_code=201, response_model=NumberOut, responses=error_responses(400, 409, 422)
)
async def register_number(
    request: Request, body: NumberCreate, session: Session, principal: SecretKey
) -> JSONResponse:
    """Register a caller ID the tenant owns."""

    async def create() -> NumberOut:
        number = await service.register_number(session, tenant_id=principal.tenant_id, data=body)
        return number_out(number)

    return await idempotent(
        request, session, tenant_id=principal.tenant_id, status_code=201, create=create
    )


@router.get("", response_model=Page[NumberOut])
async def list_numbers(
    session: Session, principal: SecretKey, page: Annotated[PageParams, Depends(page_params)]
) -> Page[NumberOut]:
    """List the tenant's caller IDs."""
    numbers = await service.list_numbers(session, tenant_id=principal.tenant_id, page=page)
    rows, cursor = page_of(numbers, page, lambda n: n.phone_number)
    return Page(data=[number_out(n) for n in rows], next_cursor=cursor)


@router.delete("/{phone_number}", status_code=204, responses=error_responses(404))
async def delete_number(phone_number: str, session: Session, principal: SecretKey) -> Response:
    """Release a caller ID."""
    await service.delete_number(session, tenant_id=principal.tenant_id, phone_number=phone_number)
    return Response(status_code=204)
