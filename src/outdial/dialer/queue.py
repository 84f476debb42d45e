"""The dial queue's SQL, in one place: claiming, pacing, attempts, outcomes, leases.

Every function takes the session first and never commits; the worker owns transactions.
On PostgreSQL many dialers share the queue: claims lock rows with `FOR UPDATE SKIP LOCKED`
and serialise per tenant with a transaction-scoped advisory lock, so concurrency caps hold
across processes. On SQLite every write transaction is `BEGIN IMMEDIATE`, which serialises
them; one dialer process is supported there."""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    case,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.billing import service as billing
from outdial.calls.models import Call, DialJob, Participant
from outdial.campaigns.models import Campaign
from outdial.db import (
    bulk_insert,
    dialect_insert,
    insert_ignoring_conflicts,
    one_of,
    update_rows,
    utcnow,
)
from outdial.dialer import campaign_queue
from outdial.dialer.models import CallerPacing, DialAttempt, DialerLease
from outdial.dnc.models import DncEntry
from outdial.ids import new_ids
from outdial.telephony.base import CallEvent
from outdial.tenants.models import Tenant

ATTEMPTS = DialAttempt.__table__
JOBS = DialJob.__table__
PARTICIPANTS = Participant.__table__
TEXT = String()
TIMESTAMP = DateTime(timezone=True)
"""Types of the row fields `update_rows` sends as arrays."""

IN_FLIGHT = ("placing", "placed", "answered")
FINAL_PARTICIPANT = ("completed", "failed", "canceled")
REACHED = frozenset({"answered", "voicemail"})
"""End reasons of a call someone (or a machine) picked up: billed, and the job completed."""


@dataclass(frozen=True, slots=True)
class TenantLimits:
    id: str
    max_concurrency: int
    calls_per_second: float


@dataclass(slots=True)
class ClaimedJob:
    id: str
    tenant_id: str
    call_id: str
    participant_id: str
    campaign_id: str | None
    to_number: str
    from_number: str
    attempt: int
    """The attempt this claim is for (the claim counts it; see uncount_attempts)."""
    max_attempts: int


@dataclass(frozen=True, slots=True)
class DialPolicy:
    """How a call's jobs are dialed: from the call, or from its campaign's settings as
    they are when the job is claimed or settled (a PUT while paused applies on resume)."""

    calling_window: dict[str, Any] | None
    retry: dict[str, Any] | None
    ring_timeout_seconds: int
    voicemail_behavior: str
    rate_per_minute_micros: int
    calls_per_second: float | None = None
    """A campaign's own pace for its caller ID, within the tenant's."""
    max_attempts: int | None = None
    """A campaign's current retry cap, over the one its jobs were queued with."""


@dataclass(frozen=True, slots=True)
class NewAttempt:
    id: str
    job: ClaimedJob
    attempt_no: int
    dial_at: datetime


@dataclass(frozen=True, slots=True)
class Ending:
    """A participant's attempt that has ended (or could not start), to be settled."""

    job_id: str
    attempt_id: str | None
    end_reason: str
    at: datetime
    talk_seconds: int = 0
    progress: "Progress | None" = None
    """What else was heard of the attempt in the same write batch (placed, answered)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """An attempt's placement and answer, written together with its end when all three
    reach the writer in one batch: one UPDATE of the attempt instead of three."""

    placed_at: datetime | None = None
    provider_call_id: str | None = None
    """From `place`: kept only if no callback stored the carrier's id for the call."""
    answered_at: datetime | None = None
    answered_by: str | None = None
    connected_call_id: str | None = None
    """From the answer: the carrier's id of the connected call, which wins."""


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- claiming ------------------------------------------------------------------------------


async def tenants_with_due_jobs(session: AsyncSession, *, now: datetime) -> list[TenantLimits]:
    """Tenants that have at least one job due now; one index probe per tenant."""
    # The earliest due job, not EXISTS: statistics taken when a big batch was queued say
    # nearly every job waits, and EXISTS then scans the table from its start, past every job
    # already dialed; ORDER BY run_at keeps the probe on the (tenant, status, run_at) index.
    earliest_due = (
        select(DialJob.run_at)
        .where(DialJob.tenant_id == Tenant.id, DialJob.status == "waiting", DialJob.run_at <= now)
        .order_by(DialJob.run_at)
        .limit(1)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Tenant.id, Tenant.max_concurrency, Tenant.calls_per_second)
        .where(
            Tenant.is_active.is_(True),
            earliest_due.is_not(None) | campaign_queue.tenant_has_contacts_to_queue(),
        )
        .order_by(Tenant.id)
    )
    return [TenantLimits(r.id, r.max_concurrency, r.calls_per_second) for r in rows]


async def lock_tenant_queue(session: AsyncSession, tenant_id: str) -> bool:
    """Serialise claims per tenant across dialers (PostgreSQL); False if another has it now.
    Taking it again in the same transaction succeeds (advisory locks are re-entrant)."""
    if not _is_postgres(session):
        return True
    return bool(
        await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(hashtext('outdial.claim.' || :tenant))"),
            {"tenant": tenant_id},
        )
    )


async def claim_jobs(
    session: AsyncSession,
    *,
    tenant: TenantLimits,
    dialer_id: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
) -> list[ClaimedJob]:
    """Claim up to `limit` due jobs of one tenant, never past its concurrency cap. A claim
    also renews the dialer's lease (until `lease_until`): it holds what it claims."""
    if not await lock_tenant_queue(session, tenant.id):
        return []
    await renew_lease(session, dialer_id=dialer_id, lease_until=lease_until)
    active = await session.scalar(
        select(func.count())
        .select_from(DialJob)
        .where(DialJob.tenant_id == tenant.id, DialJob.status == "active")
    )
    room = min(limit, tenant.max_concurrency - (active or 0))
    if room <= 0:
        return []
    campaigns = await campaign_queue.running_campaigns(session, tenant_id=tenant.id)
    # The tenant's batches and each running campaign share the room evenly.
    share = max(1, -(-room // (1 + len(campaigns))))
    ids = await _due_job_ids(session, tenant_id=tenant.id, campaign_id=None, now=now, limit=share)
    for campaign in campaigns:
        active_here = await campaign_queue.active_jobs(
            session, tenant_id=tenant.id, campaign_id=campaign.id
        )
        wanted = min(share, room - len(ids), campaign.max_concurrency - active_here)
        if wanted <= 0:
            continue
        due = await _due_job_ids(
            session, tenant_id=tenant.id, campaign_id=campaign.id, now=now, limit=wanted
        )
        if len(due) < wanted and campaign.contacts_left:
            fresh = min(
                wanted - len(due),
                await campaign_queue.room_to_queue(
                    session, tenant_id=tenant.id, campaign_id=campaign.id, now=now
                ),
            )
            if fresh > 0:
                due += await campaign_queue.queue_contacts(
                    session, tenant_id=tenant.id, campaign=campaign, count=fresh, now=now
                )
        ids += due
    if not ids:
        return []
    rows = await session.execute(
        update(DialJob.__table__)
        .where(one_of(session, DialJob.id, ids), DialJob.status == "waiting")
        # Counted here, in the same UPDATE, for the attempt the claim is for; a job the
        # claim then does not dial has it taken back (uncount_attempts).
        .values(status="active", lease_owner=dialer_id, attempt=DialJob.attempt + 1)
        .returning(
            DialJob.id,
            DialJob.tenant_id,
            DialJob.call_id,
            DialJob.participant_id,
            DialJob.campaign_id,
            DialJob.to_number,
            DialJob.from_number,
            DialJob.attempt,
            DialJob.max_attempts,
        )
    )
    return [ClaimedJob(*row) for row in rows]


async def _due_job_ids(
    session: AsyncSession, *, tenant_id: str, campaign_id: str | None, now: datetime, limit: int
) -> list[str]:
    """Due jobs of the tenant's batches and direct calls (`campaign_id` None) or of one of
    its campaigns (jobs of campaigns not running are never taken), locked."""
    due = (
        select(DialJob.id)
        .where(
            DialJob.tenant_id == tenant_id,
            DialJob.campaign_id.is_(None)
            if campaign_id is None
            else DialJob.campaign_id == campaign_id,
            DialJob.status == "waiting",
            DialJob.run_at <= now,
        )
        .order_by(DialJob.run_at, DialJob.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.scalars(due))


async def uncount_attempts(session: AsyncSession, *, job_ids: Sequence[str]) -> None:
    """Take back the attempt a claim counted for jobs it did not dial after all."""
    if not job_ids:
        return
    await session.execute(
        update(DialJob.__table__)
        .where(one_of(session, DialJob.id, job_ids))
        .values(attempt=DialJob.attempt - 1)
    )


async def release_jobs(
    session: AsyncSession, *, job_ids: Sequence[str], run_at: datetime | None = None
) -> None:
    """Give claimed jobs back to the queue, due at `run_at` (or as they were)."""
    if not job_ids:
        return
    values: dict[str, Any] = {"status": "waiting", "lease_owner": None}
    if run_at is not None:
        values["run_at"] = run_at
    await session.execute(
        update(DialJob.__table__).where(one_of(session, DialJob.id, job_ids)).values(**values)
    )


async def policies_for(session: AsyncSession, *, call_ids: Iterable[str]) -> dict[str, DialPolicy]:
    rows = await session.execute(
        select(
            Call.id,
            Call.calling_window,
            Call.retry,
            Call.ring_timeout_seconds,
            Agent.voicemail_behavior,
            Agent.rate_per_minute_micros,
            Campaign.settings,
        )
        .join(Agent, Agent.id == Call.agent_id)
        .outerjoin(Campaign, Campaign.id == Call.campaign_id)
        .where(one_of(session, Call.id, call_ids))
    )
    return {row.id: _policy(row) for row in rows}


def _policy(row: Any) -> DialPolicy:
    campaign = row.settings
    if campaign is None:
        return DialPolicy(
            row.calling_window,
            row.retry,
            row.ring_timeout_seconds,
            row.voicemail_behavior,
            row.rate_per_minute_micros,
        )
    return DialPolicy(
        campaign["calling_window"],
        campaign["retry"],
        campaign["ring_timeout_seconds"],
        row.voicemail_behavior,
        row.rate_per_minute_micros,
        calls_per_second=campaign["calls_per_second"],
        max_attempts=campaign["retry"]["max_attempts"],
    )


async def blocked_numbers(
    session: AsyncSession, *, tenant_id: str, numbers: Iterable[str]
) -> set[str]:
    """The DNC re-check made right before dialing."""
    rows = await session.scalars(
        select(DncEntry.phone_number).where(
            DncEntry.tenant_id == tenant_id, one_of(session, DncEntry.phone_number, set(numbers))
        )
    )
    return set(rows)


async def tenant_in_credit(session: AsyncSession, *, tenant_id: str) -> bool:
    """False when charges have outrun the balance: such a tenant's jobs wait, not fail."""
    return await billing.available_micros(session, tenant_id=tenant_id) >= 0


# --- pacing --------------------------------------------------------------------------------

SLOT_SLACK_SECONDS = 0.1
"""Slots are spaced (1 + slack) / cps apart, so a dial up to `slack` seconds late never puts
more than cps dials in any one-second window: (1 + slack) / spacing = cps. A dialer's event
loop runs behind by up to ~0.1 s under full load (measured with bench/dialer.py), and a dial
later than that is handed back rather than placed; the price is dialing each caller ID at
1/1.1 of its configured rate."""
MIN_DIAL_SPACING_SECONDS = 0.0002
"""Slots no denser than one dialer can keep: denser ones would be missed (and the dials
handed back) while the event loop works through them. Caps one caller ID at 5,000 dials/s."""
"""A caller ID's dial slots are (1 + slack) / cps seconds apart, so a dial may reach the
provider up to the slack after its slot and still no one-second window holds more than cps
dials. The dialer hands back a dial that would be later than that instead of placing it."""


async def reserve_slots(
    session: AsyncSession,
    *,
    wanted: dict[str, int],
    calls_per_second: dict[str, float],
    now: float,
    horizon: float,
) -> dict[str, list[float]]:
    """Reserve dial instants (epoch seconds) for several caller IDs at once: up to
    `wanted[number]` each, spaced so that no one-second window ever holds more than
    `calls_per_second[number]` dials of that number, none later than `now + horizon`. Shared by all
    dialers through the `caller_pacing` rows, which are locked in one order (no deadlocks);
    three statements whatever the number of caller IDs."""
    if not wanted:
        return {}
    numbers = sorted(wanted)
    await session.execute(
        insert_ignoring_conflicts(session, CallerPacing),
        [{"from_number": n, "next_slot_at": 0.0} for n in numbers],
    )
    rows = await session.execute(
        select(CallerPacing.from_number, CallerPacing.next_slot_at)
        .where(one_of(session, CallerPacing.from_number, numbers))
        .order_by(CallerPacing.from_number)
        .with_for_update()
    )
    slots: dict[str, list[float]] = {}
    moved: list[dict[str, Any]] = []
    for number, next_slot in rows:
        rate = calls_per_second[number]
        interval = max((1.0 + SLOT_SLACK_SECONDS) / rate, MIN_DIAL_SPACING_SECONDS)
        start = max(next_slot or 0.0, now)
        fits = math.floor((now + horizon - start) / interval) + 1 if start <= now + horizon else 0
        taken = max(0, min(wanted[number], fits))
        slots[number] = [start + i * interval for i in range(taken)]
        if taken:
            moved.append({"number": number, "next": start + taken * interval})
    pacing = CallerPacing.__table__
    await update_rows(
        session,
        pacing,
        moved,
        fields={"number": TEXT, "next": pacing.c.next_slot_at.type},
        where=lambda row: pacing.c.from_number == row.number,
        values=lambda row: {"next_slot_at": row.next},
    )
    return slots


# --- attempts ------------------------------------------------------------------------------


async def start_attempts(
    session: AsyncSession, *, attempts: Sequence[NewAttempt], dialer_id: str, provider: str
) -> None:
    """Record attempts as committed before any is dialed, and mark their participants dialing."""
    if not attempts:
        return
    now = utcnow()
    await bulk_insert(
        session,
        DialAttempt.__table__,
        [
            {
                "id": a.id,
                "job_id": a.job.id,
                "participant_id": a.job.participant_id,
                "call_id": a.job.call_id,
                "tenant_id": a.job.tenant_id,
                "attempt_no": a.attempt_no,
                "status": "placing",
                "provider": provider,
                "to_number": a.job.to_number,
                "from_number": a.job.from_number,
                "dialer_id": dialer_id,
                "dial_at": a.dial_at,
                "created_at": now,
            }
            for a in attempts
        ],
    )
    await session.execute(
        update(Participant.__table__)
        .where(one_of(session, Participant.id, [a.job.participant_id for a in attempts]))
        .values(status="dialing", attempts=Participant.attempts + 1, dialed_at=now)
    )
    await session.execute(
        update(Call.__table__)
        .where(one_of(session, Call.id, {a.job.call_id for a in attempts}), Call.status == "queued")
        .values(status="in_progress")
    )
    await campaign_queue.set_contact_statuses(
        session,
        changes=[
            (a.job.campaign_id, a.job.to_number, "dialed", None)
            for a in attempts
            if a.job.campaign_id is not None and a.attempt_no == 1
        ],
    )


def new_attempt_ids(count: int) -> list[str]:
    return new_ids("att", count)


async def mark_placed(
    session: AsyncSession, *, placed: Sequence[tuple[str, str, datetime]]
) -> None:
    """(attempt id, provider call id, when) for attempts the provider has taken."""
    if not placed:
        return
    await update_rows(
        session,
        ATTEMPTS,
        [{"id": a, "provider_call_id": p, "at": at} for a, p, at in placed],
        fields={"id": TEXT, "provider_call_id": TEXT, "at": TIMESTAMP},
        where=lambda row: (ATTEMPTS.c.id == row.id) & (ATTEMPTS.c.status == "placing"),
        values=lambda row: {
            "status": "placed",
            # A carrier's callback may have stored its id for the connected call already.
            "provider_call_id": func.coalesce(ATTEMPTS.c.provider_call_id, row.provider_call_id),
            "placed_at": row.at,
        },
    )


async def remember_provider_call_id(
    session: AsyncSession, *, attempt_id: str, call_id: str
) -> None:
    """Store the carrier's id for an in-flight attempt's connected call (Plivo names it
    apart from the dial request), which hang-ups and lookups then use."""
    await session.execute(
        update(DialAttempt.__table__)
        .where(DialAttempt.id == attempt_id, DialAttempt.status.in_(IN_FLIGHT))
        .values(provider_call_id=call_id)
    )


async def mark_answered(session: AsyncSession, *, events: Sequence[CallEvent]) -> None:
    if not events:
        return
    rows = await session.execute(
        select(DialAttempt.id, DialAttempt.participant_id).where(
            one_of(session, DialAttempt.id, [e.attempt_id for e in events]),
            DialAttempt.status.in_(("placing", "placed")),
        )
    )
    participant_of = {row.id: row.participant_id for row in rows}
    live = [e for e in events if e.attempt_id in participant_of]
    if not live:
        return
    await update_rows(
        session,
        ATTEMPTS,
        [
            {
                "id": e.attempt_id,
                "at": e.at,
                "by": "machine" if e.machine else "human",
                "call_id": e.provider_call_id,
            }
            for e in live
        ],
        fields={"id": TEXT, "at": TIMESTAMP, "by": TEXT, "call_id": TEXT},
        where=lambda row: ATTEMPTS.c.id == row.id,
        values=lambda row: {
            "status": "answered",
            "answered_at": row.at,
            "answered_by": row.by,
            "provider_call_id": func.coalesce(row.call_id, ATTEMPTS.c.provider_call_id),
        },
    )
    await update_rows(
        session,
        PARTICIPANTS,
        [{"id": participant_of[e.attempt_id], "at": e.at} for e in live],
        fields={"id": TEXT, "at": TIMESTAMP},
        where=lambda row: (PARTICIPANTS.c.id == row.id) & (PARTICIPANTS.c.status == "dialing"),
        values=lambda row: {"status": "in_progress", "answered_at": row.at},
    )


async def record_call_events(
    session: AsyncSession,
    *,
    events: Sequence[CallEvent],
    placed: Sequence[tuple[str, str, datetime]] = (),
) -> None:
    """Apply what a provider reported (placements, answers and endings), from whichever
    process heard it: the dialer's own provider tasks or the API's carrier callbacks. Events
    of attempts already settled change nothing, so a repeated callback is harmless. An
    attempt that ends in this very batch is written once, its placement and answer with it."""
    ended = [e for e in events if e.kind == "ended"]
    ending_ids = {e.attempt_id for e in ended}
    answers = [e for e in events if e.kind == "answered"]
    await mark_placed(session, placed=[p for p in placed if p[0] not in ending_ids])
    await mark_answered(session, events=[e for e in answers if e.attempt_id not in ending_ids])
    progress = _progress_of(
        [p for p in placed if p[0] in ending_ids],
        [e for e in answers if e.attempt_id in ending_ids],
    )
    in_flight = {
        a.id: a for a in await attempts_by_id(session, attempt_ids=[e.attempt_id for e in ended])
    }
    by_machine = {a.id for a in in_flight.values() if a.answered_by == "machine"}
    by_machine.update(a for a, p in progress.items() if p.answered_by == "machine")
    await settle(
        session,
        endings=[
            Ending(
                in_flight[e.attempt_id].job_id,
                e.attempt_id,
                _end_reason(e, answered_by_machine=e.attempt_id in by_machine),
                e.at,
                e.talk_seconds,
                progress.get(e.attempt_id),
            )
            for e in ended
            if e.attempt_id in in_flight
        ],
    )


def _progress_of(
    placed: Sequence[tuple[str, str, datetime]], answers: Sequence[CallEvent]
) -> dict[str, Progress]:
    placements = {attempt_id: (call_id, at) for attempt_id, call_id, at in placed}
    answered = {e.attempt_id: e for e in answers}
    progress: dict[str, Progress] = {}
    for attempt_id in placements.keys() | answered.keys():
        call_id, placed_at = placements.get(attempt_id, (None, None))
        answer = answered.get(attempt_id)
        progress[attempt_id] = Progress(
            placed_at=placed_at,
            provider_call_id=call_id,
            answered_at=answer.at if answer else None,
            answered_by=("machine" if answer.machine else "human") if answer else None,
            connected_call_id=answer.provider_call_id if answer else None,
        )
    return progress


def _end_reason(event: CallEvent, *, answered_by_machine: bool) -> str:
    """A call a machine picked up ends as voicemail, however the carrier reports its end."""
    if event.end_reason == "answered" and answered_by_machine:
        return "voicemail"
    return event.end_reason or "carrier_error"


async def settle(session: AsyncSession, *, endings: Sequence[Ending]) -> None:
    """Settle ended attempts: retry per the call's policy, or finish the participant (status,
    end reason, duration, charge, hold released) and, when it was the last, the call."""
    if not endings:
        return
    await _end_attempts(session, [e for e in endings if e.attempt_id])
    jobs = {
        row.id: row
        for row in await session.execute(
            select(
                DialJob.id,
                DialJob.tenant_id,
                DialJob.call_id,
                DialJob.participant_id,
                DialJob.attempt,
                DialJob.max_attempts,
                DialJob.campaign_id,
                DialJob.to_number,
                Participant.hold_micros,
            )
            .join(Participant, Participant.id == DialJob.participant_id)
            .where(one_of(session, DialJob.id, [e.job_id for e in endings]))
        )
    }
    policies = await policies_for(session, call_ids={row.call_id for row in jobs.values()})
    retries: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    releases: list[billing.Release] = []
    for ending in endings:
        job = jobs[ending.job_id]
        policy = policies[job.call_id]
        max_attempts = policy.max_attempts or job.max_attempts
        if _should_retry(policy, ending.end_reason, job.attempt, max_attempts):
            delay = timedelta(seconds=(policy.retry or {}).get("delay_seconds", 0))
            retries.append(
                {
                    "b_job": job.id,
                    "b_participant": job.participant_id,
                    "b_run_at": ending.at + delay,
                }
            )
            continue
        reached = ending.end_reason in REACHED
        cost = (
            billing.call_cost_micros(policy.rate_per_minute_micros, ending.talk_seconds)
            if reached
            else 0
        )
        status = (
            "completed" if reached else "canceled" if ending.end_reason == "canceled" else "failed"
        )
        finals.append(
            {
                "b_job": job.id,
                "b_job_status": status,
                "b_participant": job.participant_id,
                "b_status": status,
                "b_reason": ending.end_reason,
                "b_at": ending.at,
                "b_answered_at": ending.progress.answered_at if ending.progress else None,
                "b_duration": ending.talk_seconds if reached else None,
                "b_cost": cost,
            }
        )
        releases.append(billing.Release(job.tenant_id, job.hold_micros, cost, job.participant_id))
    await _requeue(session, retries)
    await _finish(session, finals)
    campaign_finals = [(jobs[f["b_job"]], f) for f in finals if jobs[f["b_job"]].campaign_id]
    await campaign_queue.set_contact_statuses(
        session,
        changes=[
            (job.campaign_id, job.to_number, _contact_status(job.attempt, f), f["b_reason"])
            for job, f in campaign_finals
        ],
    )
    # Before release_holds: campaign rows are locked before the tenant's, as claims do.
    await campaign_queue.complete_finished_campaigns(
        session, campaign_ids={job.campaign_id for job, _ in campaign_finals}
    )
    await billing.release_holds(session, releases=releases)
    if finals:
        await complete_finished_calls(session, call_ids={jobs[f["b_job"]].call_id for f in finals})


async def _end_attempts(session: AsyncSession, endings: Sequence[Ending]) -> None:
    a = ATTEMPTS.c
    await update_rows(
        session,
        ATTEMPTS,
        [
            {
                "id": e.attempt_id,
                "status": "lost" if e.end_reason == "lost" else "ended",
                "at": e.at,
                "reason": e.end_reason,
                "talk": e.talk_seconds,
                **_progress_fields(e.progress),
            }
            for e in endings
        ],
        fields={
            "id": TEXT,
            "status": TEXT,
            "at": TIMESTAMP,
            "reason": TEXT,
            "talk": Integer(),
            "placed_at": TIMESTAMP,
            "provider_call_id": TEXT,
            "answered_at": TIMESTAMP,
            "answered_by": TEXT,
            "connected_call_id": TEXT,
        },
        where=lambda row: a.id == row.id,
        values=lambda row: {
            "status": row.status,
            "ended_at": row.at,
            "end_reason": row.reason,
            "talk_seconds": row.talk,
            "placed_at": func.coalesce(a.placed_at, row.placed_at),
            "provider_call_id": func.coalesce(
                row.connected_call_id, a.provider_call_id, row.provider_call_id
            ),
            "answered_at": func.coalesce(a.answered_at, row.answered_at),
            "answered_by": func.coalesce(a.answered_by, row.answered_by),
        },
    )


def _progress_fields(progress: Progress | None) -> dict[str, Any]:
    p = progress or Progress()
    return {
        "placed_at": p.placed_at,
        "provider_call_id": p.provider_call_id,
        "answered_at": p.answered_at,
        "answered_by": p.answered_by,
        "connected_call_id": p.connected_call_id,
    }


def _contact_status(attempts: int, final: dict[str, Any]) -> str:
    """A campaign contact's final status: as its call's, but `skipped_dnc` when a DNC
    re-check stopped it before any dial, and `failed` when canceled."""
    if final["b_reason"] == "dnc" and attempts == 0:
        return "skipped_dnc"
    return "completed" if final["b_status"] == "completed" else "failed"


def _should_retry(policy: DialPolicy, end_reason: str, attempt: int, max_attempts: int) -> bool:
    retry = policy.retry
    return bool(retry) and end_reason in retry["on"] and attempt < max_attempts


async def _requeue(session: AsyncSession, retries: list[dict[str, Any]]) -> None:
    if not retries:
        return
    await update_rows(
        session,
        JOBS,
        [{"id": r["b_job"], "run_at": r["b_run_at"]} for r in retries],
        fields={"id": TEXT, "run_at": TIMESTAMP},
        where=lambda row: JOBS.c.id == row.id,
        values=lambda row: {"status": "waiting", "run_at": row.run_at, "lease_owner": None},
    )
    await session.execute(
        update(PARTICIPANTS)
        .where(one_of(session, PARTICIPANTS.c.id, [r["b_participant"] for r in retries]))
        .values(status="queued")
    )


async def _finish(session: AsyncSession, finals: list[dict[str, Any]]) -> None:
    if not finals:
        return
    await update_rows(
        session,
        JOBS,
        [{"id": f["b_job"], "status": f["b_job_status"]} for f in finals],
        fields={"id": TEXT, "status": TEXT},
        where=lambda row: JOBS.c.id == row.id,
        values=lambda row: {"status": row.status, "lease_owner": None},
    )
    p = PARTICIPANTS.c
    await update_rows(
        session,
        PARTICIPANTS,
        [
            {
                "id": f["b_participant"],
                "status": f["b_status"],
                "reason": f["b_reason"],
                "at": f["b_at"],
                "answered_at": f["b_answered_at"],
                "duration": f["b_duration"],
                "cost": f["b_cost"],
            }
            for f in finals
        ],
        fields={
            "id": TEXT,
            "status": TEXT,
            "reason": TEXT,
            "at": TIMESTAMP,
            "answered_at": TIMESTAMP,
            "duration": Integer(),
            "cost": BigInteger(),
        },
        where=lambda row: p.id == row.id,
        values=lambda row: {
            "status": row.status,
            "end_reason": row.reason,
            "ended_at": row.at,
            "answered_at": func.coalesce(p.answered_at, row.answered_at),
            "duration_seconds": row.duration,
            "cost_micros": row.cost,
        },
    )


async def complete_finished_calls(session: AsyncSession, *, call_ids: set[str]) -> None:
    """A call whose every participant is final has ended: `canceled` if someone ended it
    (any participant canceled), as POST /v1/calls/{id}/end says when it ends it at once;
    `completed` otherwise."""
    unfinished = select(Participant.id).where(
        Participant.call_id == Call.id, Participant.status.not_in(FINAL_PARTICIPANT)
    )
    canceled = select(Participant.id).where(
        Participant.call_id == Call.id, Participant.status == "canceled"
    )
    await session.execute(
        update(Call.__table__)
        .where(one_of(session, Call.id, call_ids), Call.ended_at.is_(None), ~unfinished.exists())
        .values(status=case((canceled.exists(), "canceled"), else_="completed"), ended_at=utcnow())
    )


# --- leases and reconciliation ---------------------------------------------------------------


async def renew_lease(session: AsyncSession, *, dialer_id: str, lease_until: datetime) -> None:
    """Keep this dialer's claim on its active jobs until `lease_until` (one row, however
    many jobs)."""
    statement = dialect_insert(session, DialerLease).values(
        dialer_id=dialer_id, lease_expires_at=lease_until
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[DialerLease.dialer_id],
            set_={"lease_expires_at": statement.excluded.lease_expires_at},
        )
    )


async def take_over_expired(
    session: AsyncSession, *, dialer_id: str, now: datetime, lease_until: datetime, limit: int
) -> list[str]:
    """Claim, for reconciliation, active jobs whose dialer stopped renewing its lease."""
    holder_alive = (
        select(DialerLease.dialer_id)
        .where(DialerLease.dialer_id == DialJob.lease_owner, DialerLease.lease_expires_at >= now)
        .exists()
    )
    expired = (
        select(DialJob.id)
        .where(DialJob.status == "active", ~holder_alive)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(await session.scalars(expired))
    if not ids:
        return []
    await renew_lease(session, dialer_id=dialer_id, lease_until=lease_until)
    await session.execute(
        update(DialJob.__table__)
        .where(one_of(session, DialJob.id, ids))
        .values(lease_owner=dialer_id)
    )
    return ids


async def forget_dead_dialers(session: AsyncSession, *, expired_before: datetime) -> None:
    """Drop the leases of dialers long gone that hold no job any more."""
    holds_jobs = (
        select(DialJob.id)
        .where(DialJob.status == "active", DialJob.lease_owner == DialerLease.dialer_id)
        .exists()
    )
    await session.execute(
        delete(DialerLease.__table__).where(
            DialerLease.lease_expires_at < expired_before, ~holds_jobs
        )
    )


_IN_FLIGHT_COLUMNS = (
    DialAttempt.id,
    DialAttempt.job_id,
    DialAttempt.participant_id,
    DialAttempt.status,
    DialAttempt.answered_by,
)


@dataclass(frozen=True, slots=True)
class InFlightAttempt:
    id: str
    job_id: str
    participant_id: str
    status: str
    answered_by: str | None


async def orphan_attempts(
    session: AsyncSession, *, job_ids: Sequence[str]
) -> list[InFlightAttempt]:
    """The unsettled attempt of each taken-over job (jobs without one have none in flight)."""
    rows = await session.execute(
        select(*_IN_FLIGHT_COLUMNS)
        .join(DialJob, DialJob.id == DialAttempt.job_id)
        .where(
            one_of(session, DialAttempt.job_id, job_ids),
            DialAttempt.attempt_no == DialJob.attempt,
            DialAttempt.status.in_(IN_FLIGHT),
        )
    )
    return [InFlightAttempt(*row) for row in rows]


async def attempts_by_id(
    session: AsyncSession, *, attempt_ids: Sequence[str]
) -> list[InFlightAttempt]:
    """The still-unsettled attempts among these, locked against a racing settler."""
    if not attempt_ids:
        return []
    rows = await session.execute(
        select(*_IN_FLIGHT_COLUMNS)
        .where(one_of(session, DialAttempt.id, attempt_ids), DialAttempt.status.in_(IN_FLIGHT))
        .with_for_update()
    )
    return [InFlightAttempt(*row) for row in rows]


async def withdraw_attempts(
    session: AsyncSession, *, attempts: Sequence[InFlightAttempt], run_at: datetime | None = None
) -> None:
    """Undo attempts the provider never received: they never happened, so the jobs go back to
    the queue (due at `run_at`, or as they were) and no number is dialed twice."""
    if not attempts:
        return
    await session.execute(
        delete(DialAttempt.__table__).where(
            one_of(session, DialAttempt.id, [a.id for a in attempts])
        )
    )
    job_ids = [a.job_id for a in attempts]
    await session.execute(
        update(DialJob.__table__)
        .where(one_of(session, DialJob.id, job_ids))
        .values(
            attempt=DialJob.attempt - 1,
            status="waiting",
            lease_owner=None,
            **({"run_at": run_at} if run_at is not None else {}),
        )
    )
    await session.execute(
        update(Participant.__table__)
        .where(one_of(session, Participant.id, [a.participant_id for a in attempts]))
        .values(
            status="queued",
            attempts=Participant.attempts - 1,
            # A participant whose only attempt never happened was never dialed.
            dialed_at=case((Participant.attempts == 1, None), else_=Participant.dialed_at),
        )
    )
    never_dialed = await session.execute(
        select(DialJob.campaign_id, DialJob.to_number).where(
            one_of(session, DialJob.id, job_ids),
            DialJob.campaign_id.is_not(None),
            DialJob.attempt == 0,
        )
    )
    await campaign_queue.set_contact_statuses(
        session, changes=[(c, n, "pending", None) for c, n in never_dialed]
    )
    # A participant whose call was ended meanwhile (its hang-up asked for by POST
    # /v1/calls/{id}/end) is not queued again: it is canceled and its hold released.
    ended = await session.scalars(
        select(DialJob.id)
        .join(Participant, Participant.id == DialJob.participant_id)
        .where(one_of(session, DialJob.id, job_ids), Participant.hangup_requested_at.is_not(None))
    )
    await settle(session, endings=[Ending(job_id, None, "canceled", utcnow()) for job_id in ended])


async def settled_attempts(session: AsyncSession, *, attempt_ids: Sequence[str]) -> set[str]:
    """Those of these attempts no longer in flight: ended, lost, or withdrawn (gone). Their
    end may have been written by another process (the API, from a carrier's callback)."""
    if not attempt_ids:
        return set()
    in_flight = await session.scalars(
        select(DialAttempt.id).where(
            one_of(session, DialAttempt.id, attempt_ids), DialAttempt.status.in_(IN_FLIGHT)
        )
    )
    return set(attempt_ids) - set(in_flight)


async def provider_call_ids(
    session: AsyncSession, *, attempt_ids: Sequence[str]
) -> dict[str, str | None]:
    """The carrier's id for each of these attempts' calls, as last stored (None if unknown)."""
    if not attempt_ids:
        return {}
    rows = await session.execute(
        select(DialAttempt.id, DialAttempt.provider_call_id).where(
            one_of(session, DialAttempt.id, attempt_ids)
        )
    )
    return {row.id: row.provider_call_id for row in rows}


async def hangups_requested(session: AsyncSession, *, dialer_id: str) -> list[str]:
    """Attempts of this dialer whose call someone asked to end (POST /v1/calls/{id}/end)."""
    # Two steps, so the heartbeat reads only the (few) participants whose end was asked for,
    # through their partial index, whatever the planner thinks of the attempts table.
    asked = list(
        await session.scalars(
            select(Participant.id).where(
                Participant.hangup_requested_at.is_not(None),
                Participant.status.not_in(FINAL_PARTICIPANT),
            )
        )
    )
    if not asked:
        return []
    rows = await session.scalars(
        select(DialAttempt.id).where(
            one_of(session, DialAttempt.participant_id, asked),
            DialAttempt.dialer_id == dialer_id,
            DialAttempt.status.in_(IN_FLIGHT),
        )
    )
    return list(rows)
