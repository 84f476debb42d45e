"""The dial queue as the rest of outdial uses it: jobs queued with their calls, canceled
while they wait, the work a caller ID or an agent is used by, and the counts the API shows."""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.models import Call
from outdial.calls.statuses import EndReason
from outdial.db import bulk_insert, notify, utcnow
from outdial.dialer.models import DialAttempt, DialJob
from outdial.dialer.settle import Ending, settle
from outdial.dialer.sources import source
from outdial.dialer.statuses import UNFINISHED_JOB, AttemptStatus, JobStatus
from outdial.errors import Conflict

QUEUE_STATS = (JobStatus.WAITING, JobStatus.ACTIVE, JobStatus.COMPLETED, JobStatus.FAILED)


def job_row(
    *,
    id: str,
    tenant_id: str,
    call_id: str,
    participant_id: str,
    to_number: str,
    from_number: str,
    variables: Mapping[str, Any],
    max_attempts: int,
    now: datetime,
    campaign_id: str | None = None,
) -> dict[str, Any]:
    """A dial job, due now, for one PSTN participant."""
    return {
        "id": id,
        "tenant_id": tenant_id,
        "call_id": call_id,
        "participant_id": participant_id,
        "status": str(JobStatus.WAITING),
        "to_number": to_number,
        "from_number": from_number,
        "variables": variables,
        "campaign_id": campaign_id,
        "attempt": 0,
        "max_attempts": max_attempts,
        "run_at": now,
        "created_at": now,
    }


async def enqueue(session: AsyncSession, *, jobs: list[dict[str, Any]]) -> None:
    """Queue these jobs (from `job_row`) in the caller's transaction."""
    await bulk_insert(session, DialJob.__table__, jobs)


JOBS_CHANNEL = "outdial_jobs"
"""Dialers listen here: work became due now (`wake_dialers`)."""


async def wake_dialers(session: AsyncSession) -> None:
    """Have idle dialers claim at once, when this transaction commits, rather than at their
    next poll: a request's first dial then follows its answer within milliseconds."""
    await notify(session, JOBS_CHANNEL)


async def cancel_waiting(
    session: AsyncSession,
    *,
    tenant_id: str,
    call_id: str | None = None,
    campaign_id: str | None = None,
) -> list[str]:
    """Cancel the jobs of a call (or of a campaign) still waiting to be claimed: each is
    settled `canceled` (participant canceled, hold released, call ended when it was the last).
    A job a dialer has claimed is live, not waiting, and is left to its hang-up. Answers the
    canceled participants' ids."""
    assert (call_id is None) != (campaign_id is None)
    which = (
        DialJob.call_id == call_id if call_id is not None else DialJob.campaign_id == campaign_id
    )
    taken = (
        await session.execute(
            update(DialJob.__table__)
            .where(DialJob.tenant_id == tenant_id, which, DialJob.status == JobStatus.WAITING)
            # Settled below, in this transaction: no dialer can claim them meanwhile.
            .values(status=JobStatus.ACTIVE, lease_owner=None)
            .returning(DialJob.id, DialJob.participant_id)
        )
    ).all()
    now = utcnow()
    await settle(session, endings=[Ending(job.id, None, EndReason.CANCELED, now) for job in taken])
    return [job.participant_id for job in taken]


@dataclass(frozen=True, slots=True)
class WorkInUse:
    """Work that dials from a caller ID or as an agent: jobs waiting, dials live, and the
    sources (campaigns) that would queue more."""

    waiting_jobs: int
    live_dials: int
    sources: list[str]

    def __bool__(self) -> bool:
        return bool(self.waiting_jobs or self.live_dials or self.sources)

    def conflict(self, what: str, *, code: str) -> Conflict:
        """The 409 for releasing `what` (a caller ID, an agent) while this work uses it."""
        return Conflict(
            f"{what} is used by work not finished ({self.waiting_jobs} queued dial(s), "
            f"{self.live_dials} live, {len(self.sources)} campaign(s)). Let it finish or end "
            "it, or pass ?force=true to end it now: its participants and contacts fail "
            "`not_permitted`; live calls finish.",
            code=code,
            details={
                "waiting_jobs": self.waiting_jobs,
                "live_dials": self.live_dials,
                "campaigns": self.sources,
            },
        )


async def work_using(
    session: AsyncSession,
    *,
    tenant_id: str,
    from_number: str | None = None,
    agent_id: str | None = None,
) -> WorkInUse:
    """The tenant's unfinished work dialing from this caller ID (or as this agent); its
    sources are locked until the transaction ends, so none starts a dial meanwhile."""
    assert (from_number is None) != (agent_id is None)
    sources = await source().using(
        session, tenant_id=tenant_id, from_number=from_number, agent_id=agent_id
    )
    rows = await session.execute(
        select(DialJob.status, func.count())
        .where(_jobs_using(tenant_id, from_number, agent_id))
        .group_by(DialJob.status)
    )
    counts = {status: count for status, count in rows}
    return WorkInUse(counts.get(JobStatus.WAITING, 0), counts.get(JobStatus.ACTIVE, 0), sources)


async def end_work_using(
    session: AsyncSession,
    *,
    tenant_id: str,
    work: WorkInUse,
    from_number: str | None = None,
    agent_id: str | None = None,
) -> None:
    """End the work `work_using` found, `not_permitted`: waiting jobs are settled (their
    participants fail, their holds are released) and the sources queue nothing more. Live
    dials are left to finish: they were allowed when placed, and cutting off a person who
    answered would abandon the call; a retry they ask for is ended at its claim by the
    dial-time checks (dialer/claimer.py)."""
    taken = (
        (
            await session.execute(
                update(DialJob.__table__)
                .where(
                    _jobs_using(tenant_id, from_number, agent_id),
                    DialJob.status == JobStatus.WAITING,
                )
                # Settled below, in this transaction: no dialer can claim them meanwhile.
                .values(status=JobStatus.ACTIVE, lease_owner=None)
                .returning(DialJob.id)
            )
        )
        .scalars()
        .all()
    )
    now = utcnow()
    await settle(
        session, endings=[Ending(job_id, None, EndReason.NOT_PERMITTED, now) for job_id in taken]
    )
    await source().end_unqueued(
        session, source_ids=work.sources, end_reason=EndReason.NOT_PERMITTED
    )


def _jobs_using(tenant_id: str, from_number: str | None, agent_id: str | None) -> Any:
    unfinished = (DialJob.tenant_id == tenant_id) & DialJob.status.in_(UNFINISHED_JOB)
    if from_number is not None:
        return unfinished & (DialJob.from_number == from_number)
    of_agent = select(Call.id).where(Call.tenant_id == tenant_id, Call.agent_id == agent_id)
    return unfinished & DialJob.call_id.in_(of_agent)


async def counts_by_status(session: AsyncSession, *, tenant_id: str) -> dict[str, int]:
    """The tenant's dial jobs: waiting, active, completed and failed."""
    rows = await session.execute(
        select(DialJob.status, func.count())
        .where(DialJob.tenant_id == tenant_id)
        .group_by(DialJob.status)
    )
    counts = Counter({status: count for status, count in rows})
    return {str(name): counts[name] for name in QUEUE_STATS}


async def attempts_made(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> int:
    """Dial attempts made for a campaign's calls (attempts handed back not counted)."""
    return (
        await session.scalar(
            select(func.coalesce(func.sum(DialJob.attempt), 0)).where(
                DialJob.tenant_id == tenant_id, DialJob.campaign_id == campaign_id
            )
        )
    ) or 0


async def latest_pending_dial(
    session: AsyncSession, *, tenant_id: str, campaign_id: str
) -> datetime | None:
    """The latest dial slot among a campaign's attempts not yet handed to the provider."""
    return await session.scalar(
        select(func.max(DialAttempt.dial_at))
        .join(DialJob, DialJob.id == DialAttempt.job_id)
        .where(
            DialJob.tenant_id == tenant_id,
            DialJob.campaign_id == campaign_id,
            DialJob.status == JobStatus.ACTIVE,
            DialAttempt.status == AttemptStatus.PLACING,
        )
    )


async def first_dials_waiting(
    session: AsyncSession, *, tenant_id: str, campaign_id: str, now: datetime, up_to: int
) -> int:
    """How many of a campaign's never-dialed jobs wait for a later time (their calling
    window), counting no further than `up_to`."""
    later = (
        select(DialJob.id)
        .where(
            DialJob.tenant_id == tenant_id,
            DialJob.campaign_id == campaign_id,
            DialJob.status == JobStatus.WAITING,
            DialJob.run_at > now,
            DialJob.attempt == 0,  # retries waiting for their delay do not count
        )
        .limit(up_to)
        .subquery()
    )
    return (await session.scalar(select(func.count()).select_from(later))) or 0


async def next_waiting_dials(
    session: AsyncSession, *, tenant_id: str, campaign_id: str
) -> tuple[datetime | None, datetime | None]:
    """When a campaign's waiting jobs are next due: its first dials (contacts queued, due now
    or waiting for their calling window) and its retries. Two index lookups."""

    def earliest(first_dial: bool) -> Any:
        return (
            select(DialJob.run_at)
            .where(
                DialJob.tenant_id == tenant_id,
                DialJob.campaign_id == campaign_id,
                DialJob.status == JobStatus.WAITING,
                (DialJob.attempt == 0) if first_dial else (DialJob.attempt > 0),
            )
            .order_by(DialJob.run_at)
            .limit(1)
        )

    return await session.scalar(earliest(True)), await session.scalar(earliest(False))
