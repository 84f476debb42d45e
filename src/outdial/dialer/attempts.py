"""Dial attempts: committed before the provider hears of them, placed, answered, withdrawn when
the provider never received them, and the reads reconciliation and hang-ups need."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.billing import service as billing
from outdial.calls.models import Participant
from outdial.calls.statuses import FINAL_PARTICIPANT, EndReason, ParticipantStatus
from outdial.db import TEXT, TIMESTAMP, UTCDateTime, bulk_insert, one_of, update_rows, utcnow
from outdial.dialer.breaker import Backoff
from outdial.dialer.claim import ClaimedJob
from outdial.dialer.models import DialAttempt, DialJob
from outdial.dialer.settle import Ending, settle
from outdial.dialer.sources import ParticipantChange
from outdial.dialer.status import change_participants, start_calls
from outdial.dialer.statuses import IN_FLIGHT, AttemptStatus, JobStatus
from outdial.ids import new_ids
from outdial.telephony.base import CallEvent

ATTEMPTS = DialAttempt.__table__
PARTICIPANTS = Participant.__table__


@dataclass(frozen=True, slots=True)
class NewAttempt:
    id: str
    job: ClaimedJob
    attempt_no: int
    dial_at: datetime
    calls_per_second: float
    """The pace its caller ID was claimed at (a re-slot keeps to it)."""
    checks: dict[str, Any] | None = None
    """The checks that allowed it (dialer/audit.py)."""


_IN_FLIGHT_COLUMNS = (
    DialAttempt.id,
    DialAttempt.job_id,
    DialAttempt.participant_id,
    DialAttempt.status,
    DialAttempt.answered_by,
    DialAttempt.dial_at,
)


@dataclass(frozen=True, slots=True)
class InFlightAttempt:
    id: str
    job_id: str
    participant_id: str
    status: str
    answered_by: str | None
    dial_at: datetime
    """Its slot: the placer hands it to the provider then, or, later, never."""


async def start_attempts(
    session: AsyncSession, *, attempts: Sequence[NewAttempt], dialer_id: str, provider: str
) -> None:
    """Record attempts as committed before any is dialed, and mark their participants dialing."""
    if not attempts:
        return
    now = utcnow()
    await bulk_insert(
        session,
        ATTEMPTS,
        [
            {
                "id": a.id,
                "job_id": a.job.id,
                "participant_id": a.job.participant_id,
                "call_id": a.job.call_id,
                "tenant_id": a.job.tenant_id,
                "attempt_no": a.attempt_no,
                "status": str(AttemptStatus.PLACING),
                "provider": provider,
                "to_number": a.job.to_number,
                "from_number": a.job.from_number,
                "dialer_id": dialer_id,
                "dial_at": a.dial_at,
                "created_at": now,
                "checks": a.checks,
            }
            for a in attempts
        ],
    )
    await change_participants(
        session,
        changes=[
            ParticipantChange(
                a.job.participant_id,
                a.job.tenant_id,
                ParticipantStatus.DIALING,
                now,
                attempts=1,
                campaign_id=a.job.campaign_id,
                number=a.job.to_number,
                dials=a.attempt_no,
            )
            for a in attempts
        ],
    )
    await start_calls(session, call_ids={a.job.call_id for a in attempts})


async def hold_first_dials(session: AsyncSession, *, tenant_id: str, holds: dict[str, int]) -> None:
    """Hold one 30-second increment (participant id → its price) for each participant dialed
    without a hold yet: a campaign holds credit for the calls it is making, not for its whole
    list. The dialer checked the tenant's credit just before; settle releases the hold."""
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
    await update_rows(
        session,
        PARTICIPANTS,
        [{"id": p, "hold": holds[p]} for p in unheld],
        fields={"id": TEXT, "hold": PARTICIPANTS.c.hold_micros.type},
        where=lambda row: PARTICIPANTS.c.id == row.id,
        values=lambda row: {"hold_micros": row.hold},
    )
    await billing.add_hold(
        session, tenant_id=tenant_id, amount_micros=sum(holds[p] for p in unheld)
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
        where=lambda row: (ATTEMPTS.c.id == row.id) & (ATTEMPTS.c.status == AttemptStatus.PLACING),
        values=lambda row: {
            "status": AttemptStatus.PLACED,
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
    """Attempts a person or a machine picked up; their participants are in progress."""
    if not events:
        return
    # Locked, as `attempts_by_id` locks them: an attempt a racing settler (reconciliation)
    # ends meanwhile is read once that settler commits, ended, and left so. Read unlocked, it
    # was written back to `answered`: in flight again, and settled a second time at its end.
    rows = await session.execute(
        select(DialAttempt.id, DialAttempt.participant_id, DialAttempt.tenant_id)
        .where(
            one_of(session, DialAttempt.id, [e.attempt_id for e in events]),
            DialAttempt.status.in_((AttemptStatus.PLACING, AttemptStatus.PLACED)),
        )
        .with_for_update()
    )
    participant_of = {row.id: (row.participant_id, row.tenant_id) for row in rows}
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
            "status": AttemptStatus.ANSWERED,
            "answered_at": row.at,
            "answered_by": row.by,
            "provider_call_id": func.coalesce(row.call_id, ATTEMPTS.c.provider_call_id),
        },
    )
    await change_participants(
        session,
        changes=[
            ParticipantChange(
                *participant_of[e.attempt_id],
                ParticipantStatus.IN_PROGRESS,
                e.at,
                answered_at=e.at,
            )
            for e in live
        ],
    )


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
    session: AsyncSession, *, attempts: Sequence[InFlightAttempt], backoff: Backoff | None = None
) -> None:
    """Undo attempts the provider never received: they never happened, so the jobs go back to
    the queue and no number is dialed twice. Due as they were, or, with a `backoff` (the
    carrier had the dial and did not take it), after its next delay for each job."""
    if not attempts:
        return
    await session.execute(
        delete(DialAttempt.__table__).where(
            one_of(session, DialAttempt.id, [a.id for a in attempts])
        )
    )
    jobs = (
        await session.execute(
            update(DialJob.__table__)
            .where(one_of(session, DialJob.id, [a.job_id for a in attempts]))
            .values(
                attempt=DialJob.attempt - 1,
                status=JobStatus.WAITING,
                lease_owner=None,
                **(_backed_off(backoff, utcnow()) if backoff is not None else {}),
            )
            .returning(
                DialJob.id,
                DialJob.participant_id,
                DialJob.tenant_id,
                DialJob.campaign_id,
                DialJob.to_number,
                DialJob.attempt,
            )
        )
    ).all()
    now = utcnow()
    await change_participants(
        session,
        changes=[
            ParticipantChange(
                job.participant_id,
                job.tenant_id,
                ParticipantStatus.QUEUED,
                now,
                attempts=-1,
                campaign_id=job.campaign_id,
                number=job.to_number,
                dials=job.attempt,
            )
            for job in jobs
        ],
    )
    # A participant whose call was ended meanwhile (its hang-up asked for by POST
    # /v1/calls/{id}/end) is not queued again: it is canceled and its hold released.
    ended = await session.scalars(
        select(DialJob.id)
        .join(Participant, Participant.id == DialJob.participant_id)
        .where(
            one_of(session, DialJob.id, [job.id for job in jobs]),
            Participant.hangup_requested_at.is_not(None),
        )
    )
    await settle(
        session, endings=[Ending(job_id, None, EndReason.CANCELED, now) for job_id in ended]
    )


def _backed_off(backoff: Backoff, now: datetime) -> dict[str, Any]:
    """A job's next run, by how many of its dials the carrier never took, and that count."""
    *growing, cap = [literal(now + delay, UTCDateTime()) for delay in backoff.delays]
    waits = [(DialJob.never_received == n, at) for n, at in enumerate(growing)]
    return {
        "never_received": DialJob.never_received + 1,
        "run_at": case(*waits, else_=cap) if waits else cap,
    }


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
