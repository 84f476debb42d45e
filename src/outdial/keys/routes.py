from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from outdial.error_handlers import error_responses
from outdial.idempotency.dependency import Idempotent
from outdial.keys import service
from outdial.keys.auth import SecretKey, Session
from outdial.keys.models import ApiKey
from outdial.keys.schemas import KeyCreate, KeyCreated, KeyOut, Me
from outdial.pagination import Page, PageParams, page_of
from outdial.pagination_query import page_params
from outdial.tenants import service as tenants

router = APIRouter(tags=["keys"])


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut.model_validate(key, from_attributes=True)


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreated,
    responses=error_responses(400, 403, 404, 422),
)
async def create_key(
    body: KeyCreate, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Create a secret or publishable key; the plaintext `key` is shown only here.

    Under an Idempotency-Key the answer kept for replays has `key` null: keys are stored only
    as digests, so a replay answers the same key object without its plaintext."""
    key, plaintext = await service.create_key(session, tenant_id=principal.tenant_id, data=body)
    kept = once.keep(KeyCreated(**key_out(key).model_dump(), key=None), 201)
    return JSONResponse({**kept, "key": plaintext}, 201)


@router.get("/keys", response_model=Page[KeyOut], responses=error_responses(403))
async def list_keys(
    session: Session, principal: SecretKey, page: Annotated[PageParams, Depends(page_params)]
) -> Page[KeyOut]:
    """List the tenant's keys (never their plaintext)."""
    keys = await service.list_keys(session, tenant_id=principal.tenant_id, page=page)
    rows, cursor = page_of(keys, page, lambda k: k.id)
    return Page(data=[key_out(k) for k in rows], next_cursor=cursor)


@router.delete("/keys/{key_id}", status_code=204, responses=error_responses(403, 404, 409))
async def delete_key(key_id: str, session: Session, principal: SecretKey) -> Response:
    """Delete a key; it stops working at once. The last secret key cannot be deleted (409)."""
    await service.delete_key(session, tenant_id=principal.tenant_id, key_id=key_id)
    return Response(status_code=204)


@router.get("/auth/me", response_model=Me)
async def me(session: Session, principal: SecretKey) -> Me:
    """Who this key is: its tenant, type and limits (secret keys only, as the contract says)."""
    tenant = await tenants.get_tenant(session, tenant_id=principal.tenant_id)
    return Me(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        key_id=principal.key_id,
        key_type=principal.key_type,
        max_concurrency=tenant.max_concurrency,
        calls_per_second=tenant.calls_per_second,
    )
