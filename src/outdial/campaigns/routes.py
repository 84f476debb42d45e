import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from outdial.campaigns import service
from outdial.campaigns.contacts import ImportResult
from outdial.campaigns.models import CampaignContact
from outdial.campaigns.schemas import (
    CampaignCreate,
    CampaignCreated,
    CampaignDetail,
    CampaignOut,
    CampaignStarted,
    CampaignState,
    CampaignStatus,
    CampaignUpdate,
    ContactOut,
    ContactsInserted,
    ContactStatus,
    ContactsUpload,
    LaunchBlocker,
    LaunchCheckOut,
    LaunchWarning,
)
from outdial.campaigns.views import campaign_detail, campaign_out
from outdial.error_handlers import ErrorResponse, error_responses
from outdial.errors import ValidationFailed
from outdial.idempotency.dependency import Idempotent, idempotent_stream
from outdial.keys.auth import SecretKey, Session
from outdial.pagination import Page, PageParams, page_of
from outdial.pagination_query import page_params

router = APIRouter(prefix="/campaigns", tags=["campaigns"], responses=error_responses(403))
"""Mounted twice: under /v1, and at the seed's unprefixed /campaigns paths (hidden)."""


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` references replaced by the definitions, so it
    can sit inside the OpenAPI document as it is."""
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)


_CONTACTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined(ContactsUpload.model_json_schema())},
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "A header row naming a phone_number column (and optionally "
                    "timezone); every other column becomes a variable. Any size: streamed.",
                }
            },
        },
    }
}


def contact_out(contact: CampaignContact) -> ContactOut:
    return ContactOut.model_validate(contact, from_attributes=True)


def inserted_out(result: ImportResult) -> ContactsInserted:
    return ContactsInserted(
        inserted_count=result.inserted,
        duplicate_count=result.duplicates,
        invalid_count=result.invalid_count,
        invalid=result.invalid,
    )


@router.post(
    "",
    status_code=201,
    response_model=CampaignCreated,
    responses=error_responses(400, 404, 422),
)
async def create_campaign(
    body: CampaignCreate, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Create a draft campaign."""
    campaign = await service.create_campaign(session, tenant_id=principal.tenant_id, data=body)
    return once.answer(CampaignCreated(campaign_id=campaign.id), 201)


@router.get("", response_model=Page[CampaignOut])
async def list_campaigns(
    session: Session,
    principal: SecretKey,
    page: Annotated[PageParams, Depends(page_params)],
    status: CampaignStatus | None = None,
) -> Page[CampaignOut]:
    """List the tenant's campaigns, oldest first, optionally by status."""
    campaigns = await service.list_campaigns(
        session, tenant_id=principal.tenant_id, page=page, status=status
    )
    rows, cursor = page_of(campaigns, page, lambda c: c.id)
    return Page(data=[campaign_out(c) for c in rows], next_cursor=cursor)


@router.get("/{campaign_id}", response_model=CampaignDetail, responses=error_responses(404))
async def get_campaign(campaign_id: str, session: Session, principal: SecretKey) -> CampaignDetail:
    """Fetch a campaign with its contacts per status, attempts, answers and progress."""
    campaign = await service.get_campaign(
        session, tenant_id=principal.tenant_id, campaign_id=campaign_id
    )
    return await campaign_detail(session, campaign)


@router.put("/{campaign_id}", response_model=CampaignOut, responses=error_responses(400, 404, 409))
async def update_campaign(
    campaign_id: str, body: CampaignUpdate, session: Session, principal: SecretKey
) -> CampaignOut:
    """Change a campaign; fields left out keep their values (so do settings left out)."""
    campaign = await service.update_campaign(
        session, tenant_id=principal.tenant_id, campaign_id=campaign_id, data=body
    )
    return campaign_out(campaign)


@router.delete("/{campaign_id}", status_code=204, responses=error_responses(404, 409))
async def delete_campaign(campaign_id: str, session: Session, principal: SecretKey) -> Response:
    """Delete a campaign that is not running (a paused one's queued calls are canceled)."""
    await service.delete_campaign(session, tenant_id=principal.tenant_id, campaign_id=campaign_id)
    return Response(status_code=204)


@router.post(
    "/{campaign_id}/contacts",
    status_code=201,
    response_model=ContactsInserted,
    responses=error_responses(400, 404, 409, 422),
    openapi_extra=_CONTACTS_BODY,
)
async def add_contacts(
    campaign_id: str, request: Request, session: Session, principal: SecretKey
) -> JSONResponse:
    """Add contacts to a draft or paused campaign: JSON (up to 10,000) or CSV (any size)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()

    # Read as a stream either way (a CSV body may be of any size), so one Idempotency-Key
    # path serves both: its fingerprint is the body's bytes.
    async def add(body: AsyncIterator[bytes]) -> ContactsInserted:
        if content_type == "text/csv":
            result = await service.import_csv(
                session, tenant_id=principal.tenant_id, campaign_id=campaign_id, body=body
            )
        else:
            upload = _json_contacts(b"".join([chunk async for chunk in body]))
            result = await service.add_contacts(
                session,
                tenant_id=principal.tenant_id,
                campaign_id=campaign_id,
                contacts=upload.contacts,
            )
        return inserted_out(result)

    return await idempotent_stream(
        request, session, tenant_id=principal.tenant_id, status_code=201, create=add
    )


def _json_contacts(body: bytes) -> ContactsUpload:
    """The JSON body, whatever Content-Type said (the seed's curl sends it as a form)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValidationFailed(
            'The body must be JSON ({"contacts": [...]}) or text/csv.', code="invalid_body"
        ) from None
    try:
        return ContactsUpload.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.get(
    "/{campaign_id}/contacts", response_model=Page[ContactOut], responses=error_responses(404)
)
async def list_contacts(
    campaign_id: str,
    session: Session,
    principal: SecretKey,
    page: Annotated[PageParams, Depends(page_params)],
    status: ContactStatus | None = None,
) -> Page[ContactOut]:
    """List a campaign's contacts in upload order, optionally by status."""
    contacts = await service.list_contacts(
        session, tenant_id=principal.tenant_id, campaign_id=campaign_id, page=page, status=status
    )
    rows, cursor = page_of(contacts, page, lambda c: c.id)
    return Page(data=[contact_out(c) for c in rows], next_cursor=cursor)


@router.get(
    "/{campaign_id}/launch-check",
    response_model=LaunchCheckOut,
    response_model_exclude_none=True,
    responses=error_responses(404),
)
async def launch_check(campaign_id: str, session: Session, principal: SecretKey) -> LaunchCheckOut:
    """Say why the campaign would not dial right now (blockers) and what would make its
    calls less than they could be (warnings)."""
    check = await service.launch_check(
        session, tenant_id=principal.tenant_id, campaign_id=campaign_id
    )
    return LaunchCheckOut(
        ready=check.ready,
        blockers=[LaunchBlocker.model_validate(f, from_attributes=True) for f in check.blockers],
        warnings=[LaunchWarning.model_validate(f, from_attributes=True) for f in check.warnings],
    )


@router.post(
    "/{campaign_id}/start",
    response_model=CampaignStarted,
    responses=error_responses(404, 422)
    | {
        409: {
            "model": ErrorResponse,
            "description": "`invalid_campaign_state`: not a draft. `not_ready`: a "
            "launch-check blocker that is not merely a matter of time stands; "
            "`details.blockers` lists each (`code`, `message`).",
        }
    },
)
async def start_campaign(
    campaign_id: str, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Start a draft: skip the contacts on the DNC list, hand the rest to the dialer. 409
    `not_ready` (listing them) while a launch-check blocker other than a matter of time
    stands."""
    dialed, skipped = await service.start_campaign(
        session, tenant_id=principal.tenant_id, campaign_id=campaign_id
    )
    return once.answer(CampaignStarted(contacts_dialed=dialed, contacts_skipped_dnc=skipped), 200)


@router.post(
    "/{campaign_id}/pause", response_model=CampaignState, responses=error_responses(404, 409)
)
async def pause_campaign(campaign_id: str, session: Session, principal: SecretKey) -> CampaignState:
    """Pause a running campaign: once this answers, none of its dials starts (live calls
    finish)."""
    campaign = await service.pause_campaign(
        session, tenant_id=principal.tenant_id, campaign_id=campaign_id
    )
    await session.commit()
    latest = await service.latest_claimed_dial(session, campaign=campaign)
    await session.commit()  # nothing is held while waiting
    await service.wait_past(latest)
    return CampaignState(status=CampaignStatus.PAUSED, id=campaign.id)


@router.post(
    "/{campaign_id}/resume", response_model=CampaignState, responses=error_responses(404, 409)
)
async def resume_campaign(
    campaign_id: str, session: Session, principal: SecretKey
) -> CampaignState:
    """Resume a paused campaign where it stopped."""
    campaign = await service.resume_campaign(
        session, tenant_id=principal.tenant_id, campaign_id=campaign_id
    )
    return CampaignState(status=campaign.status, id=campaign.id)  # type: ignore[arg-type]
