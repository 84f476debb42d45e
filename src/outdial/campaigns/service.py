import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents import service as agents
from outdial.calls.statuses import EndReason
from outdial.campaigns import contacts as contact_import
from outdial.campaigns.dialing import complete_finished_campaigns
from outdial.campaigns.events import campaigns_moved
from outdial.campaigns.launch import LaunchCheck, check_launch
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.campaigns.schemas import (
    CampaignCreate,
    CampaignSettings,
    CampaignUpdate,
    ContactIn,
)
from outdial.campaigns.statuses import CampaignStatus, ContactStatus, PausedReason
from outdial.db import utcnow
from outdial.dialer import jobs, pacing
from outdial.dnc.models import DncEntry
from outdial.errors import Conflict, NotFound, ValidationFailed
from outdial.ids import new_id
from outdial.numbers import service as numbers
from outdial.pagination import PageParams, paginate
from outdial.webhooks.outbox import EventType

EDITABLE_CONTACTS = (CampaignStatus.DRAFT, CampaignStatus.PAUSED)
"""Contacts are added while a campaign is a draft or paused: an upload holds the campaign's
row for its whole transaction, which would stall the dialer's claims of a running one."""
PAUSE_SAFETY_SECONDS = 0.05


def _not_found(campaign_id: str) -> NotFound:
    return NotFound(f"No campaign {campaign_id} for this tenant.", code="campaign_not_found")


def _wrong_state(campaign: Campaign, action: str) -> Conflict:
    return Conflict(
        f"Campaign {campaign.id} is {campaign.status}; it cannot {action}.",
        code="invalid_campaign_state",
        details={"status": campaign.status},
    )


async def get_campaign(
    session: AsyncSession, *, tenant_id: str, campaign_id: str, lock: bool = False
) -> Campaign:
    """The tenant's campaign; `lock` holds its row to the end of the transaction, which
    serialises state changes with each other and with the dialer's claims."""
    stmt = select(Campaign).where(
        Campaign.id == campaign_id, Campaign.tenant_id == tenant_id, Campaign.deleted_at.is_(None)
    )
    if lock:
        stmt = stmt.with_for_update()
    campaign = await session.scalar(stmt.execution_options(populate_existing=True))
    if campaign is None:
        raise _not_found(campaign_id)
    return campaign


async def create_campaign(
    session: AsyncSession, *, tenant_id: str, data: CampaignCreate
) -> Campaign:
    """A draft campaign, dialing as the tenant's agent from a number the tenant owns."""
    agent = await agents.get_agent(session, tenant_id=tenant_id, agent_id=str(data.agent_id))
    await numbers.require_owned(session, tenant_id=tenant_id, phone_numbers={data.call_from_number})
    now = utcnow()
    campaign = Campaign(
        id=new_id("cmp"),
        tenant_id=tenant_id,
        agent_id=agent.id,
        name=data.name,
        call_from_number=data.call_from_number,
        status=CampaignStatus.DRAFT,
        settings=data.settings.model_dump(mode="json"),
        queued_through="",
        contacts_left=True,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    await session.flush()
    return campaign


async def list_campaigns(
    session: AsyncSession, *, tenant_id: str, page: PageParams, status: str | None = None
) -> list[Campaign]:
    stmt = select(Campaign).where(Campaign.tenant_id == tenant_id, Campaign.deleted_at.is_(None))
    if status is not None:
        stmt = stmt.where(Campaign.status == status)
    return list((await session.scalars(paginate(stmt, Campaign.id, page))).all())


async def update_campaign(
    session: AsyncSession, *, tenant_id: str, campaign_id: str, data: CampaignUpdate
) -> Campaign:
    """Change a campaign that has not completed. Settings take effect at the dialer's next
    claim: at once while running, on resume while paused."""
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id, lock=True)
    if campaign.status == CampaignStatus.COMPLETED:
        raise _wrong_state(campaign, "be changed")
    if data.agent_id is not None:
        agent = await agents.get_agent(session, tenant_id=tenant_id, agent_id=str(data.agent_id))
        campaign.agent_id = agent.id
    if data.call_from_number is not None:
        await numbers.require_owned(
            session, tenant_id=tenant_id, phone_numbers={data.call_from_number}
        )
        campaign.call_from_number = data.call_from_number
    if data.name is not None:
        campaign.name = data.name
    if data.settings is not None:
        campaign.settings = _merged_settings(campaign.settings, data.settings)
    campaign.updated_at = utcnow()
    await session.flush()
    return campaign


def _merged_settings(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    try:
        merged = CampaignSettings.model_validate({**current, **changes})
    except ValidationError as exc:
        details = [
            {
                "loc": ["settings", *err["loc"]],
                "message": err["msg"].removeprefix("Value error, "),
                "type": err["type"],
            }
            for err in exc.errors()
        ]
        fields = ", ".join(".".join(str(p) for p in d["loc"]) for d in details)
        raise ValidationFailed(f"Invalid request: {fields}.", details=details) from None
    return merged.model_dump(mode="json")


async def delete_campaign(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> None:
    """Delete a campaign that is not running; a paused one's queued calls are canceled
    (its live calls finish). Its calls keep their history."""
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id, lock=True)
    if campaign.status == CampaignStatus.RUNNING:
        raise Conflict(
            f"Campaign {campaign.id} is running: pause it before deleting it.",
            code="campaign_running",
            details={"status": campaign.status},
        )
    await jobs.cancel_waiting(session, tenant_id=tenant_id, campaign_id=campaign.id)
    campaign.deleted_at = utcnow()
    await session.flush()


# --- contacts ------------------------------------------------------------------------------


async def _campaign_taking_contacts(
    session: AsyncSession, *, tenant_id: str, campaign_id: str
) -> Campaign:
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id, lock=True)
    if campaign.status not in EDITABLE_CONTACTS:
        raise _wrong_state(campaign, "take contacts (only a draft or a paused campaign can)")
    # A paused campaign's dialer picks up what is added after the contacts it has queued.
    campaign.contacts_left = True
    return campaign


async def add_contacts(
    session: AsyncSession, *, tenant_id: str, campaign_id: str, contacts: list[ContactIn]
) -> contact_import.ImportResult:
    campaign = await _campaign_taking_contacts(
        session, tenant_id=tenant_id, campaign_id=campaign_id
    )
    return await contact_import.insert_json(session, campaign_id=campaign.id, contacts=contacts)


async def import_csv(
    session: AsyncSession, *, tenant_id: str, campaign_id: str, body: AsyncIterator[bytes]
) -> contact_import.ImportResult:
    campaign = await _campaign_taking_contacts(
        session, tenant_id=tenant_id, campaign_id=campaign_id
    )
    return await contact_import.insert_csv(session, campaign_id=campaign.id, body=body)


async def list_contacts(
    session: AsyncSession,
    *,
    tenant_id: str,
    campaign_id: str,
    page: PageParams,
    status: str | None = None,
) -> list[CampaignContact]:
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id)
    stmt = select(CampaignContact).where(CampaignContact.campaign_id == campaign.id)
    if status is not None:
        stmt = stmt.where(CampaignContact.status == status)
    return list((await session.scalars(paginate(stmt, CampaignContact.id, page))).all())


# --- lifecycle -----------------------------------------------------------------------------


async def launch_check(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> LaunchCheck:
    """Why the campaign would not dial right now, and what would make its calls less than
    they could be (campaigns/launch.py)."""
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id)
    return await check_launch(session, campaign=campaign, now=utcnow())


async def start_campaign(
    session: AsyncSession, *, tenant_id: str, campaign_id: str
) -> tuple[int, int]:
    """Scrub the pending contacts against the DNC list and hand the rest to the dialer;
    answers (handed to the dialer, skipped for DNC). Refused (409 `not_ready`) while the
    launch check finds a blocker that is not merely a matter of time.

    Both are single statements inside the database, whatever the campaign's size: the
    dialer creates each contact's call when it reaches it (campaigns/dialing.py),
    so starting a million-contact campaign writes no million calls."""
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id, lock=True)
    if campaign.status != CampaignStatus.DRAFT:
        raise _wrong_state(campaign, "start (only a draft can)")
    stopping = (await check_launch(session, campaign=campaign, now=utcnow())).stopping_start
    if stopping:
        raise Conflict(
            f"Campaign {campaign.id} is not ready to start: "
            + " ".join(finding.message for finding in stopping),
            code="not_ready",
            details={"blockers": [{"code": str(f.code), "message": f.message} for f in stopping]},
        )
    listed = exists().where(
        DncEntry.tenant_id == tenant_id, DncEntry.phone_number == CampaignContact.phone_number
    )
    skipped = (
        await session.execute(
            update(CampaignContact)
            .where(
                CampaignContact.campaign_id == campaign.id,
                CampaignContact.status == ContactStatus.PENDING,
                listed,
            )
            .values(status=ContactStatus.SKIPPED_DNC, end_reason=EndReason.DNC)
            .execution_options(synchronize_session=False)
        )
    ).rowcount
    pending = await session.scalar(
        select(func.count())
        .select_from(CampaignContact)
        .where(
            CampaignContact.campaign_id == campaign.id,
            CampaignContact.status == ContactStatus.PENDING,
        )
    )
    now = utcnow()
    campaign.status = CampaignStatus.RUNNING if pending else CampaignStatus.COMPLETED
    campaign.contacts_left = bool(pending)
    campaign.started_at = now
    campaign.completed_at = None if pending else now
    campaign.updated_at = now
    await session.flush()
    moved = [(campaign.id, tenant_id)]
    await campaigns_moved(session, moved=moved, to=EventType.CAMPAIGN_STARTED)
    if pending:
        await jobs.wake_dialers(session)
    else:
        await campaigns_moved(session, moved=moved, to=EventType.CAMPAIGN_COMPLETED)
    return pending or 0, skipped


async def pause_campaign(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> Campaign:
    """Mark a running campaign paused. Its row lock waits for any claim of the dialer that
    saw it running, so once this commits no claim takes its jobs; the caller then waits
    past `latest_claimed_dial` before answering."""
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id, lock=True)
    if campaign.status != CampaignStatus.RUNNING:
        raise _wrong_state(campaign, "pause (only a running campaign can)")
    campaign.status = CampaignStatus.PAUSED
    campaign.paused_reason = PausedReason.REQUESTED
    campaign.updated_at = utcnow()
    await session.flush()
    await campaigns_moved(session, moved=[(campaign.id, tenant_id)], to=EventType.CAMPAIGN_PAUSED)
    return campaign


async def latest_claimed_dial(session: AsyncSession, *, campaign: Campaign) -> datetime | None:
    """The latest dial slot of the campaign's claimed dials not yet placed. Read after the
    pause has committed, it covers every claim that saw the campaign running."""
    return await jobs.latest_pending_dial(
        session, tenant_id=campaign.tenant_id, campaign_id=campaign.id
    )


async def wait_past(latest_dial: datetime | None) -> None:
    """Sleep until no dial slotted at `latest_dial` or earlier can still start: a dial waits
    for its slot and is handed back when it would be later than the slack (worker._place)."""
    if latest_dial is None:
        return
    until = _seconds_until(latest_dial) + pacing.SLOT_SLACK_SECONDS + PAUSE_SAFETY_SECONDS
    if until > 0:
        await asyncio.sleep(until)


def _seconds_until(at: datetime) -> float:
    return (at - utcnow()).total_seconds()


async def resume_campaign(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> Campaign:
    """Let the dialer claim a paused campaign's jobs again (with its settings as they are
    now); one with nothing left to dial completes at once."""
    campaign = await get_campaign(session, tenant_id=tenant_id, campaign_id=campaign_id, lock=True)
    if campaign.status != CampaignStatus.PAUSED:
        raise _wrong_state(campaign, "resume (only a paused campaign can)")
    campaign.status = CampaignStatus.RUNNING
    campaign.paused_reason = None
    campaign.updated_at = utcnow()
    await session.flush()
    await campaigns_moved(session, moved=[(campaign.id, tenant_id)], to=EventType.CAMPAIGN_RESUMED)
    await jobs.wake_dialers(session)
    await complete_finished_campaigns(session, campaign_ids={campaign.id})
    await session.refresh(campaign)
    return campaign
