"""Campaigns as a source of work for the dialer (the interface dialer/sources.py defines).

A campaign's contacts become calls lazily: `start` only scrubs them against the DNC list,
and each claim of the dialer queues the next contacts (a call, its participant and its job,
due at once) as the campaign's concurrency leaves room. So a million-contact campaign starts
in one statement, and its calls, holds and charges are made one contact at a time, like a
batch's. Contact statuses follow their participants', and a campaign whose contacts are all
final completes by itself."""

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.calls.rows import call_row, insert_calls, participant_row
from outdial.calls.schemas import DEFAULT_MAX_ATTEMPTS_PER_24H
from outdial.calls.statuses import ANSWERED_BY_PERSON, CallStatus, EndReason, ParticipantStatus
from outdial.campaigns.abandonment import Answer, count_answers
from outdial.campaigns.events import campaigns_moved
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.campaigns.statuses import FINAL_CONTACT, CampaignStatus, ContactStatus
from outdial.db import TEXT, update_rows, utcnow
from outdial.dialer import jobs
from outdial.dialer.models import DialJob
from outdial.dialer.sources import ParticipantChange, RunningSource, SourcePolicy
from outdial.dialer.statuses import UNFINISHED_JOB
from outdial.ids import new_ids
from outdial.tenants.models import Tenant
from outdial.webhooks.outbox import EventType

CONTACTS = CampaignContact.__table__

MAX_QUEUED_UNTIL_LATER = 10_000
"""A campaign stops queueing contacts while this many of its queued ones wait for their
calling window to open: at night a whole list would otherwise become calls (and the dialer
would spin doing it). Contacts further down the list wait for those to be dialed."""


class CampaignSource:
    """Campaigns, plugged into the dialer by `outdial.wiring`."""

    def tenants_with_work(self) -> ColumnElement[bool]:
        """The tenant runs a campaign with contacts not yet queued."""
        return (
            select(Campaign.id)
            .where(
                Campaign.tenant_id == Tenant.id,
                Campaign.status == CampaignStatus.RUNNING,
                Campaign.contacts_left.is_(True),
            )
            .exists()
        )

    async def running(self, session: AsyncSession, *, tenant_id: str) -> list[RunningSource]:
        """The tenant's running campaigns, their rows locked to the end of the claim: `pause`
        locks the row too, so it waits for this claim, and no claim after it sees the
        campaign running."""
        rows = await session.execute(
            select(Campaign.id, Campaign.settings, Campaign.contacts_left)
            .where(
                Campaign.tenant_id == tenant_id,
                Campaign.status == CampaignStatus.RUNNING,
                Campaign.deleted_at.is_(None),
            )
            .order_by(Campaign.id)
            .with_for_update(of=Campaign)
        )
        return [
            RunningSource(row.id, int(row.settings["max_concurrency"]), row.contacts_left)
            for row in rows
        ]

    async def queue_more(
        self,
        session: AsyncSession,
        *,
        tenant_id: str,
        source: RunningSource,
        count: int,
        now: datetime,
    ) -> list[str]:
        """Queue the campaign's next pending contacts (at most `count`, and none while
        MAX_QUEUED_UNTIL_LATER of them wait for their window): a call, a participant and a
        job each. Answers the new jobs' ids."""
        waiting = await jobs.first_dials_waiting(
            session,
            tenant_id=tenant_id,
            campaign_id=source.id,
            now=now,
            up_to=MAX_QUEUED_UNTIL_LATER,
        )
        count = min(count, MAX_QUEUED_UNTIL_LATER - waiting)
        if count <= 0:
            return []
        return await _queue_contacts(
            session, tenant_id=tenant_id, campaign_id=source.id, count=count, now=now
        )

    async def policies(
        self, session: AsyncSession, *, source_ids: Collection[str]
    ) -> dict[str, SourcePolicy]:
        """Each campaign's settings as they are now."""
        rows = await session.execute(
            select(Campaign.id, Campaign.settings).where(Campaign.id.in_(list(source_ids)))
        )
        return {row.id: _policy(row.settings) for row in rows}

    async def recipient_zones(
        self, session: AsyncSession, *, recipients: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The zones given with these (campaign id, number) contacts, where one was given."""
        if not recipients:
            return {}
        rows = await session.execute(
            select(
                CampaignContact.campaign_id, CampaignContact.phone_number, CampaignContact.timezone
            ).where(
                tuple_(CampaignContact.campaign_id, CampaignContact.phone_number).in_(
                    list(recipients)
                ),
                CampaignContact.timezone.is_not(None),
            )
        )
        return {(c, n): tz for c, n, tz in rows}

    async def participants_changed(
        self, session: AsyncSession, *, changes: Sequence[ParticipantChange]
    ) -> None:
        """Each contact follows its call's participant (see `contact_status`); one whose call
        a person answered is counted, once, for its campaign's abandonment rate, which may
        pause the campaign (campaigns/abandonment.py)."""
        answers = [c for c in changes if _answered_by_person(c)]
        updates = [
            (c.campaign_id, c.number, status, c.end_reason)
            for c in changes
            if c.campaign_id
            and c.number
            and not _answered_by_person(c)
            and (status := contact_status(c)) is not None
        ]
        await update_rows(
            session,
            CONTACTS,
            [
                {"campaign": c, "number": n, "status": str(s), "reason": r and str(r)}
                for c, n, s, r in updates
            ],
            fields={"campaign": TEXT, "number": TEXT, "status": TEXT, "reason": TEXT},
            where=lambda row: (
                (CONTACTS.c.campaign_id == row.campaign) & (CONTACTS.c.phone_number == row.number)
            ),
            values=lambda row: {"status": row.status, "end_reason": row.reason},
        )
        paused = await count_answers(session, answers=await _settle_answered(session, answers))
        await campaigns_moved(session, moved=paused, to=EventType.CAMPAIGN_PAUSED)

    async def jobs_finished(self, session: AsyncSession, *, source_ids: Collection[str]) -> None:
        """Complete those of these campaigns that have nothing left to dial."""
        await complete_finished_campaigns(session, campaign_ids=source_ids)

    async def using(
        self,
        session: AsyncSession,
        *,
        tenant_id: str,
        from_number: str | None = None,
        agent_id: str | None = None,
    ) -> list[str]:
        """The tenant's running and paused campaigns that dial from this caller ID (or as
        this agent), locked in id order as claims lock them. Drafts have no work yet."""
        uses = (
            Campaign.call_from_number == from_number
            if from_number is not None
            else Campaign.agent_id == agent_id
        )
        rows = await session.scalars(
            select(Campaign.id)
            .where(
                Campaign.tenant_id == tenant_id,
                Campaign.status.in_((CampaignStatus.RUNNING, CampaignStatus.PAUSED)),
                Campaign.deleted_at.is_(None),
                uses,
            )
            .order_by(Campaign.id)
            .with_for_update()
        )
        return list(rows)

    async def end_unqueued(
        self,
        session: AsyncSession,
        *,
        source_ids: Collection[str],
        end_reason: EndReason,
    ) -> None:
        """The campaigns' pending contacts fail with `end_reason`; each campaign completes
        once its queued calls have ended (at once if none is left)."""
        if not source_ids:
            return
        await session.execute(
            update(CampaignContact)
            .where(
                CampaignContact.campaign_id.in_(list(source_ids)),
                CampaignContact.status == ContactStatus.PENDING,
            )
            .values(status=ContactStatus.FAILED, end_reason=end_reason)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(Campaign)
            .where(Campaign.id.in_(list(source_ids)))
            .values(contacts_left=False)
            .execution_options(synchronize_session=False)
        )
        await complete_finished_campaigns(session, campaign_ids=source_ids)


def contact_status(change: ParticipantChange) -> ContactStatus | None:
    """A contact's status for its participant's change, or None where it stays as it is:
    `dialed` at the first dial (and while retries are pending), `pending` again when its
    only attempt was never received, then `completed` (answered or voicemail) or `failed`
    (canceled too); `skipped_dnc` when a DNC re-check stopped it before any dial."""
    status = change.status
    if status == ParticipantStatus.DIALING:
        return ContactStatus.DIALED if change.dials == 1 else None
    if status == ParticipantStatus.QUEUED:
        return ContactStatus.PENDING if change.dials == 0 else None
    if status == ParticipantStatus.COMPLETED:
        return ContactStatus.COMPLETED
    if status in (ParticipantStatus.FAILED, ParticipantStatus.CANCELED):
        if change.end_reason == EndReason.DNC and change.dials == 0:
            return ContactStatus.SKIPPED_DNC
        return ContactStatus.FAILED
    return None


def _answered_by_person(change: ParticipantChange) -> bool:
    """A contact's call ended after a person answered it (agent_unavailable: and nobody
    spoke, an abandoned call)."""
    return bool(
        change.campaign_id
        and change.number
        and change.status.is_final
        and change.end_reason in ANSWERED_BY_PERSON
    )


async def _settle_answered(
    session: AsyncSession, changes: Sequence[ParticipantChange]
) -> list[Answer]:
    """Make final the contacts of these changes not final yet; answers those, each once even
    if its participant's end is reported again."""
    by_key = {(c.campaign_id, c.number): c for c in changes}
    settled: list[Answer] = []
    for reason in sorted({c.end_reason for c in changes if c.end_reason is not None}):
        keys = sorted(key for key, c in by_key.items() if c.end_reason == reason)
        status = contact_status(by_key[keys[0]])
        rows = await session.execute(
            update(CampaignContact)
            .where(
                tuple_(CampaignContact.campaign_id, CampaignContact.phone_number).in_(keys),
                CampaignContact.status.not_in(FINAL_CONTACT),
            )
            .values(status=status, end_reason=reason)
            .returning(CampaignContact.campaign_id, CampaignContact.phone_number)
            .execution_options(synchronize_session=False)
        )
        settled.extend(
            Answer(c, by_key[(c, n)].at.date(), reason == EndReason.AGENT_UNAVAILABLE)
            for c, n in rows
        )
    return settled


def _policy(settings: dict[str, Any]) -> SourcePolicy:
    return SourcePolicy(
        calling_window=settings["calling_window"],
        retry=settings["retry"],
        ring_timeout_seconds=settings["ring_timeout_seconds"],
        calls_per_second=settings["calls_per_second"],
        max_attempts=settings["retry"]["max_attempts"],
        # Settings stored before state rules existed have them on, as new ones do by default.
        state_rules=settings.get("state_rules", True),
        max_attempts_per_24h=settings.get("max_attempts_per_24h", DEFAULT_MAX_ATTEMPTS_PER_24H),
    )


async def _queue_contacts(
    session: AsyncSession, *, tenant_id: str, campaign_id: str, count: int, now: datetime
) -> list[str]:
    campaign = (
        await session.execute(
            select(
                Campaign.agent_id,
                Agent.post_call,
                Campaign.call_from_number,
                Campaign.settings,
                Campaign.queued_through,
            )
            .join(Agent, Agent.id == Campaign.agent_id)
            .where(Campaign.id == campaign_id)
        )
    ).one()
    rows = (
        await session.execute(
            select(CampaignContact.id, CampaignContact.phone_number, CampaignContact.variables)
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.id > campaign.queued_through,
                CampaignContact.status == ContactStatus.PENDING,
            )
            .order_by(CampaignContact.id)
            .limit(count)
        )
    ).all()
    last = rows[-1].id if rows else campaign.queued_through
    left = len(rows) == count and await _pending_after(session, campaign_id, last)
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(queued_through=last, contacts_left=left)
    )
    if not rows:
        return []
    settings = campaign.settings
    policy = _policy(settings)
    call_ids = new_ids("call", len(rows))
    participant_ids = new_ids("participant", len(rows))
    leg_ids = new_ids("leg", len(rows))
    job_ids = new_ids("job", len(rows))
    call_rows, participant_rows, job_rows, linked = [], [], [], []
    for i, contact in enumerate(rows):
        call_rows.append(
            call_row(
                id=call_ids[i],
                tenant_id=tenant_id,
                agent_id=campaign.agent_id,
                kind="campaign",
                campaign_id=campaign_id,
                status=CallStatus.QUEUED,
                from_number=campaign.call_from_number,
                variables=contact.variables,
                post_call=campaign.post_call or {},
                calling_window=settings["calling_window"],
                retry=settings["retry"],
                ring_timeout_seconds=settings["ring_timeout_seconds"],
                state_rules=policy.state_rules,
                max_attempts_per_24h=policy.max_attempts_per_24h if policy.state_rules else None,
                now=now,
            )
        )
        participant_rows.append(
            participant_row(
                id=participant_ids[i],
                call_id=call_ids[i],
                tenant_id=tenant_id,
                position=0,
                transport="pstn",
                identity=contact.phone_number,
                from_number=campaign.call_from_number,
                metadata={},
                leg_id=leg_ids[i],
                job_id=job_ids[i],
                # Held at its first dial (dialer/attempts.hold_first_dials), not while it
                # waits its turn.
                hold_micros=0,
                now=now,
            )
        )
        job_rows.append(
            jobs.job_row(
                id=job_ids[i],
                tenant_id=tenant_id,
                call_id=call_ids[i],
                participant_id=participant_ids[i],
                to_number=contact.phone_number,
                from_number=campaign.call_from_number,
                variables=contact.variables,
                max_attempts=settings["retry"]["max_attempts"],
                campaign_id=campaign_id,
                now=now,
            )
        )
        linked.append({"id": contact.id, "call_id": call_ids[i]})
    await insert_calls(session, calls=call_rows, participants=participant_rows, jobs=job_rows)
    await update_rows(
        session,
        CONTACTS,
        linked,
        fields={"id": TEXT, "call_id": TEXT},
        where=lambda row: (CONTACTS.c.campaign_id == campaign_id) & (CONTACTS.c.id == row.id),
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
                CampaignContact.status == ContactStatus.PENDING,
            )
            .limit(1)
        )
    )


async def complete_finished_campaigns(
    session: AsyncSession, *, campaign_ids: Collection[str]
) -> None:
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
    completed = await session.execute(
        update(Campaign)
        .where(
            Campaign.id.in_(list(campaign_ids)),
            Campaign.status == CampaignStatus.RUNNING,
            Campaign.contacts_left.is_(False),
            ~unfinished,
        )
        .values(status=CampaignStatus.COMPLETED, completed_at=now, updated_at=now)
        .returning(Campaign.id, Campaign.tenant_id)
        .execution_options(synchronize_session=False)
    )
    await campaigns_moved(
        session, moved=[tuple(row) for row in completed], to=EventType.CAMPAIGN_COMPLETED
    )
