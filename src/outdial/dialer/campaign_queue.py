"""The dial queue's SQL for campaigns: which campaigns a claim may take jobs from, the
contacts it turns into calls as it reaches them, contact statuses, and completion.

A campaign's contacts become calls lazily: `start` only scrubs them against the DNC list,
and each claim queues the next contacts (a call, its participant and its job, the job due
at once) as the campaign's concurrency leaves room. So a million-contact campaign starts in
one statement, and its calls, holds and charges are made one contact at a time, like a
batch's. Called by dialer/queue.py inside its claim and settle transactions, and by the
campaigns and calls services for what they change of a campaign's jobs."""

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.billing import service as billing
from outdial.calls.models import Call, DialJob, Participant
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.db import bulk_insert, one_of, update_rows, utcnow
from outdial.dialer.models import DialAttempt
from outdial.ids import new_ids
from outdial.tenants.models import Tenant

CONTACTS = CampaignContact.__table__
TEXT = String()

UNFINISHED_JOB = ("waiting", "active")
MAX_QUEUED_UNTIL_LATER = 10_000
"""A campaign stops queueing contacts while this many of its queued ones wait for their
calling window to open: at night a whole list would otherwise become calls (and the dialer
would spin doing it). Contacts further down the list wait for those to be dialed."""


@dataclass(frozen=True, slots=True)
class RunningCampaign:
    id: str
    agent_id: str
    post_call: dict[str, Any]
    from_number: str
    settings: dict[str, Any]
    queued_through: str
    contacts_left: bool

    @property
    def max_concurrency(self) -> int:
        return int(self.settings["max_concurrency"])


async def running_campaigns(session: AsyncSession, *, tenant_id: str) -> list[RunningCampaign]:
    """The tenant's running campaigns, their rows locked to the end of the claim: `pause`
    locks the row too, so it waits for this claim, and no claim after it sees the campaign
    running."""
    rows = await session.execute(
        select(
            Campaign.id,
            Campaign.agent_id,
            Agent.post_call,
            Campaign.call_from_number,
            Campaign.settings,
            Campaign.queued_through,
            Campaign.contacts_left,
        )
        .join(Agent, Agent.id == Campaign.agent_id)
        .where(
            Campaign.tenant_id == tenant_id,
            Campaign.status == "running",
            Campaign.deleted_at.is_(None),
        )
        .order_by(Campaign.id)
        .with_for_update(of=Campaign)
    )
    return [RunningCampaign(*row) for row in rows]


def tenant_has_contacts_to_queue() -> Any:
    """For `tenants_with_due_jobs`: the tenant runs a campaign with contacts not yet queued."""
    return (
        select(Campaign.id)
        .where(
            Campaign.tenant_id == Tenant.id,
            Campaign.status == "running",
            Campaign.contacts_left.is_(True),
        )
        .exists()
    )


async def active_jobs(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(DialJob)
            .where(
                DialJob.tenant_id == tenant_id,
                DialJob.campaign_id == campaign_id,
                DialJob.status == "active",
            )
        )
    ) or 0


async def room_to_queue(
    session: AsyncSession, *, tenant_id: str, campaign_id: str, now: datetime
) -> int:
    """How many more contacts the campaign may queue now (see MAX_QUEUED_UNTIL_LATER)."""
    later = (
        select(DialJob.id)
        .where(
            DialJob.tenant_id == tenant_id,
            DialJob.campaign_id == campaign_id,
            DialJob.status == "waiting",
            DialJob.run_at > now,
            DialJob.attempt == 0,  # retries waiting for their delay do not count
        )
        .limit(MAX_QUEUED_UNTIL_LATER)
        .subquery()
    )
    waiting = await session.scalar(select(func.count()).select_from(later))
    return MAX_QUEUED_UNTIL_LATER - (waiting or 0)


async def queue_contacts(
    session: AsyncSession,
    *,
    tenant_id: str,
    campaign: RunningCampaign,
    count: int,
    now: datetime,
) -> list[str]:
    """Queue the campaign's next `count` pending contacts: a call, a participant and a
    job (due now) each. Answers the new jobs' ids, for the claim to take."""
    rows = (
        await session.execute(
            select(CampaignContact.id, CampaignContact.phone_number, CampaignContact.variables)
            .where(
                CampaignContact.campaign_id == campaign.id,
                CampaignContact.id > campaign.queued_through,
                CampaignContact.status == "pending",
            )
            .order_by(CampaignContact.id)
            .limit(count)
        )
    ).all()
    last = rows[-1].id if rows else campaign.queued_through
    left = len(rows) == count and await _pending_after(session, campaign.id, last)
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(queued_through=last, contacts_left=left)
    )
    if not rows:
        return []
    settings = campaign.settings
    call_ids = new_ids("call", len(rows))
    participant_ids = new_ids("participant", len(rows))
    leg_ids = new_ids("leg", len(rows))
    job_ids = new_ids("job", len(rows))
    calls, participants, jobs, linked = [], [], [], []
    for i, contact in enumerate(rows):
        calls.append(
            {
                "id": call_ids[i],
                "tenant_id": tenant_id,
                "agent_id": campaign.agent_id,
                "kind": "campaign",
                "batch_id": None,
                "campaign_id": campaign.id,
                "status": "queued",
                "from_number": campaign.from_number,
                "metadata": {},
                "variables": contact.variables,
                "post_call": campaign.post_call or {},
                "calling_window": settings["calling_window"],
                "retry": settings["retry"],
                "ring_timeout_seconds": settings["ring_timeout_seconds"],
                "created_at": now,
            }
        )
        participants.append(
            {
                "id": participant_ids[i],
                "call_id": call_ids[i],
                "tenant_id": tenant_id,
                "position": 0,
                "transport": "pstn",
                "identity": contact.phone_number,
                "from_number": campaign.from_number,
                "metadata": {},
                "status": "queued",
                "attempts": 0,
                "telephony_leg_id": leg_ids[i],
                "job_id": job_ids[i],
                # Held at its first dial (hold_first_dials), not while it waits its turn.
                "hold_micros": 0,
                "cost_micros": 0,
                "created_at": now,
            }
        )
        jobs.append(
            {
                "id": job_ids[i],
                "tenant_id": tenant_id,
                "call_id": call_ids[i],
                "participant_id": participant_ids[i],
                "status": "waiting",
                "to_number": contact.phone_number,
                "from_number": campaign.from_number,
                "variables": contact.variables,
                "campaign_id": campaign.id,
                "attempt": 0,
                "max_attempts": settings["retry"]["max_attempts"],
                "run_at": now,
                "created_at": now,
            }
        )
        linked.append({"id": contact.id, "call_id": call_ids[i]})
    await bulk_insert(session, Call.__table__, calls)
    await bulk_insert(session, Participant.__table__, participants)
    await bulk_insert(session, DialJob.__table__, jobs)
    await update_rows(
        session,
        CONTACTS,
        linked,
        fields={"id": TEXT, "call_id": TEXT},
        where=lambda row: (CONTACTS.c.campaign_id == campaign.id) & (CONTACTS.c.id == row.id),
        values=lambda row: {"call_id": row.call_id},
    )
    return job_ids


async def _pending_after(session: AsyncSession, campaign_id: str, after: str) -> bool:
    return bool(
        await session.scalar(
            select(CampaignContact.id)
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.id > after,
                CampaignContact.status == "pending",
            )
            .limit(1)
        )
    )


async def contact_timezones(
    session: AsyncSession, *, contacts: Collection[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The zones given with these (campaign id, number) contacts, where one was given."""
    if not contacts:
        return {}
    rows = await session.execute(
        select(
            CampaignContact.campaign_id, CampaignContact.phone_number, CampaignContact.timezone
        ).where(
            tuple_(CampaignContact.campaign_id, CampaignContact.phone_number).in_(list(contacts)),
            CampaignContact.timezone.is_not(None),
        )
    )
    return {(c, n): tz for c, n, tz in rows}


async def hold_first_dials(session: AsyncSession, *, tenant_id: str, holds: dict[str, int]) -> None:
    """Hold one 30-second increment (participant id → its price) for each campaign
    participant dialed for the first time: a campaign holds credit for the calls it is
    making, not for its whole list. The dialer checked the tenant's credit just before;
    settle releases the hold and charges the call."""
    if not holds:
        return
    unheld = list(
        await session.scalars(
            select(Participant.id).where(
                one_of(session, Participant.id, list(holds)), Participant.hold_micros == 0
            )
        )
    )
    if not unheld:
        return
    participants = Participant.__table__
    await update_rows(
        session,
        participants,
        [{"id": p, "hold": holds[p]} for p in unheld],
        fields={"id": TEXT, "hold": participants.c.hold_micros.type},
        where=lambda row: participants.c.id == row.id,
        values=lambda row: {"hold_micros": row.hold},
    )
    await session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(held_micros=Tenant.held_micros + sum(holds[p] for p in unheld))
    )


async def set_contact_statuses(
    session: AsyncSession, *, changes: Iterable[tuple[str, str, str, str | None]]
) -> None:
    """(campaign id, number, status, end reason) for contacts whose call moved on."""
    await update_rows(
        session,
        CONTACTS,
        [{"campaign": c, "number": n, "status": s, "reason": r} for c, n, s, r in changes],
        fields={"campaign": TEXT, "number": TEXT, "status": TEXT, "reason": TEXT},
        where=lambda row: (
            (CONTACTS.c.campaign_id == row.campaign) & (CONTACTS.c.phone_number == row.number)
        ),
        values=lambda row: {"status": row.status, "end_reason": row.reason},
    )


async def complete_finished_campaigns(session: AsyncSession, *, campaign_ids: set[str]) -> None:
    """A running campaign with no contact left to queue and no job left waiting or active
    has every contact final: it is completed."""
    if not campaign_ids:
        return
    unfinished = (
        select(DialJob.id)
        .where(
            DialJob.tenant_id == Campaign.tenant_id,
            DialJob.campaign_id == Campaign.id,
            DialJob.status.in_(UNFINISHED_JOB),
        )
        .exists()
    )
    now = utcnow()
    await session.execute(
        update(Campaign)
        .where(
            Campaign.id.in_(campaign_ids),
            Campaign.status == "running",
            Campaign.contacts_left.is_(False),
            ~unfinished,
        )
        .values(status="completed", completed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def latest_pending_dial(
    session: AsyncSession, *, tenant_id: str, campaign_id: str
) -> datetime | None:
    """The latest dial slot among the campaign's attempts not yet handed to the provider."""
    return await session.scalar(
        select(func.max(DialAttempt.dial_at))
        .join(DialJob, DialJob.id == DialAttempt.job_id)
        .where(
            DialJob.tenant_id == tenant_id,
            DialJob.campaign_id == campaign_id,
            DialJob.status == "active",
            DialAttempt.status == "placing",
        )
    )


async def campaign_attempts(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> int:
    """Dial attempts made for the campaign's contacts (attempts handed back not counted)."""
    return (
        await session.scalar(
            select(func.coalesce(func.sum(DialJob.attempt), 0)).where(
                DialJob.tenant_id == tenant_id, DialJob.campaign_id == campaign_id
            )
        )
    ) or 0


async def cancel_campaign_jobs(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> None:
    """Cancel every job of the campaign still waiting (its participant canceled, its hold
    released, its contact failed `canceled`), as for a deleted campaign."""
    canceled = list(
        await session.scalars(
            update(DialJob)
            .where(
                DialJob.tenant_id == tenant_id,
                DialJob.campaign_id == campaign_id,
                DialJob.status == "waiting",
            )
            .values(status="canceled", lease_owner=None)
            .returning(DialJob.participant_id)
        )
    )
    if not canceled:
        return
    now = utcnow()
    rows = (
        await session.execute(
            update(Participant)
            .where(Participant.id.in_(canceled))
            .values(status="canceled", end_reason="canceled", ended_at=now)
            .returning(Participant.call_id, Participant.identity, Participant.hold_micros)
        )
    ).all()
    await billing.release_holds(
        session,
        releases=[billing.Release(tenant_id, r.hold_micros, 0, r.call_id) for r in rows],
    )
    await session.execute(
        update(Call)
        .where(Call.id.in_([r.call_id for r in rows]))
        .values(status="canceled", ended_at=now)
    )
    await set_contact_statuses(
        session, changes=[(campaign_id, r.identity, "failed", "canceled") for r in rows]
    )


async def call_ended_by_user(session: AsyncSession, *, call_id: str, campaign_id: str) -> None:
    """POST /v1/calls/{id}/end canceled a campaign call's queued contact: the contact has
    failed (`canceled`), and the campaign may have nothing left to dial. Called before the
    holds are released: campaign rows are locked before the tenant's, as claims do."""
    canceled = await session.scalars(
        select(Participant.identity).where(
            Participant.call_id == call_id, Participant.status == "canceled"
        )
    )
    await set_contact_statuses(
        session, changes=[(campaign_id, number, "failed", "canceled") for number in canceled]
    )
    await complete_finished_campaigns(session, campaign_ids={campaign_id})
