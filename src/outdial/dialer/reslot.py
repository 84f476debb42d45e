"""Re-slotting: a dial that missed its pacing slot gets a later slot of its caller ID, rather
than going back to the queue to be withdrawn, claimed and committed again (issue 10 defect 5:
a dialer whose claims commit slowly must never loop without progress; issue 15: no wasted
work). Its attempt stays the same; only its `dial_at` moves."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import TEXT, TIMESTAMP, one_of, update_rows
from outdial.dialer import pacing
from outdial.dialer.claim import ClaimedJob
from outdial.dialer.leases import renew_lease
from outdial.dialer.models import DialAttempt, DialJob
from outdial.dialer.sources import source
from outdial.dialer.statuses import AttemptStatus, JobStatus

ATTEMPTS = DialAttempt.__table__


@dataclass(frozen=True, slots=True)
class Missed:
    """A dial that missed its slot, with the pace its caller ID was claimed at."""

    attempt_id: str
    job: ClaimedJob
    calls_per_second: float


@dataclass(slots=True)
class Reslotted:
    slots: dict[str, float]
    """Attempt id → its new slot (epoch seconds); a missed dial not here is to be withdrawn."""
    cursor: float
    """Where the dialer's own schedule now ends."""


async def reslot(
    session: AsyncSession,
    *,
    missed: Sequence[Missed],
    dialer_id: str,
    lease_until: datetime,
    now: float,
    horizon: float,
    cursor: float,
    dials_per_second: float,
) -> Reslotted:
    """New slots for missed dials that this dialer may still make, reserved as a claim
    reserves them (pacing holds across dialers): a dial whose job another dialer took over,
    or whose campaign is no longer running, gets none. The jobs and the running campaigns are
    locked, as a claim locks them, so a `pause` that answers after this commits sees the new
    slots (it waits past the latest), and one that answered before leaves its campaign's
    dials without one. The lease is renewed like a claim's: every new slot lies within the
    pacing horizon, which ends before the lease can lapse."""
    ours = set(
        await session.scalars(
            select(DialJob.id)
            .where(
                one_of(session, DialJob.id, [m.job.id for m in missed]),
                DialJob.status == JobStatus.ACTIVE,
                DialJob.lease_owner == dialer_id,
            )
            .with_for_update()
        )
    )
    tenants = {
        m.job.tenant_id for m in missed if m.job.campaign_id is not None and m.job.id in ours
    }
    running = {
        work.id for t in sorted(tenants) for work in await source().running(session, tenant_id=t)
    }
    wanted = [
        m
        for m in missed
        if m.job.id in ours and (m.job.campaign_id is None or m.job.campaign_id in running)
    ]
    placing = set(
        await session.scalars(
            select(DialAttempt.id).where(
                one_of(session, DialAttempt.id, [m.attempt_id for m in wanted]),
                DialAttempt.status == AttemptStatus.PLACING,
            )
        )
    )
    wanted = [m for m in wanted if m.attempt_id in placing]
    if not wanted:
        return Reslotted({}, cursor)
    await renew_lease(session, dialer_id=dialer_id, lease_until=lease_until)
    by_caller: dict[str, list[Missed]] = {}
    rates: dict[str, float] = {}
    for m in wanted:
        by_caller.setdefault(m.job.from_number, []).append(m)
        rates[m.job.from_number] = min(
            rates.get(m.job.from_number, m.calls_per_second), m.calls_per_second
        )
    reservation = await pacing.reserve_slots(
        session,
        wanted={number: len(group) for number, group in by_caller.items()},
        calls_per_second=rates,
        now=now,
        horizon=horizon,
        cursor=cursor,
        dials_per_second=dials_per_second,
    )
    slots = {
        m.attempt_id: slot
        for number, group in by_caller.items()
        for m, slot in zip(group, reservation.slots[number], strict=False)
    }
    await update_rows(
        session,
        ATTEMPTS,
        [{"id": a, "at": datetime.fromtimestamp(s, UTC)} for a, s in slots.items()],
        fields={"id": TEXT, "at": TIMESTAMP},
        where=lambda row: ATTEMPTS.c.id == row.id,
        values=lambda row: {"dial_at": row.at},
    )
    return Reslotted(slots, reservation.cursor)
