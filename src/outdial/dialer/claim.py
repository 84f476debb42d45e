"""Claiming due jobs: which tenants have work, a fair and capped share of each one's jobs,
and handing back what a claim does not dial."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import (
    one_of,
    try_advisory_xact_lock,
)
from outdial.dialer.leases import renew_lease
from outdial.dialer.models import DialJob
from outdial.dialer.sources import source
from outdial.dialer.statuses import JobStatus
from outdial.tenants.models import Tenant


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
    run_at: datetime
    """When it was due."""


async def tenants_with_due_jobs(session: AsyncSession, *, now: datetime) -> list[TenantLimits]:
    """Tenants that have at least one job due now; one index probe per tenant."""
    # The earliest due job, not EXISTS: statistics taken when a big batch was queued say
    # nearly every job waits, and EXISTS then scans the table from its start, past every job
    # already dialed; ORDER BY run_at keeps the probe on the (tenant, status, run_at) index.
    earliest_due = (
        select(DialJob.run_at)
        .where(
            DialJob.tenant_id == Tenant.id,
            DialJob.status == JobStatus.WAITING,
            DialJob.run_at <= now,
        )
        .order_by(DialJob.run_at)
        .limit(1)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Tenant.id, Tenant.max_concurrency, Tenant.calls_per_second)
        .where(
            Tenant.is_active.is_(True),
            earliest_due.is_not(None) | source().tenants_with_work(),
        )
        .order_by(Tenant.id)
    )
    return [TenantLimits(r.id, r.max_concurrency, r.calls_per_second) for r in rows]


async def lock_tenant_queue(session: AsyncSession, tenant_id: str) -> bool:
    """Serialise claims per tenant across dialers; False if another dialer has it now."""
    return await try_advisory_xact_lock(session, f"outdial.claim.{tenant_id}")


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
        .where(DialJob.tenant_id == tenant.id, DialJob.status == JobStatus.ACTIVE)
    )
    room = min(limit, tenant.max_concurrency - (active or 0))
    if room <= 0:
        return []
    running = await source().running(session, tenant_id=tenant.id)
    # The tenant's batches and each running source (campaign) share the room evenly.
    share = max(1, -(-room // (1 + len(running))))
    ids = await _due_job_ids(session, tenant_id=tenant.id, campaign_id=None, now=now, limit=share)
    for work in running:
        active_here = await _active_jobs(session, tenant_id=tenant.id, campaign_id=work.id)
        wanted = min(share, room - len(ids), work.max_concurrency - active_here)
        if wanted <= 0:
            continue
        due = await _due_job_ids(
            session, tenant_id=tenant.id, campaign_id=work.id, now=now, limit=wanted
        )
        if len(due) < wanted and work.has_more:
            due += await source().queue_more(
                session, tenant_id=tenant.id, source=work, count=wanted - len(due), now=now
            )
        ids += due
    if not ids:
        return []
    rows = await session.execute(
        update(DialJob.__table__)
        .where(one_of(session, DialJob.id, ids), DialJob.status == JobStatus.WAITING)
        # Counted here, in the same UPDATE, for the attempt the claim is for; a job the
        # claim then does not dial has it taken back (uncount_attempts).
        .values(status=JobStatus.ACTIVE, lease_owner=dialer_id, attempt=DialJob.attempt + 1)
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
            DialJob.run_at,
        )
    )
    return [ClaimedJob(*row) for row in rows]


async def _active_jobs(session: AsyncSession, *, tenant_id: str, campaign_id: str) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(DialJob)
            .where(
                DialJob.tenant_id == tenant_id,
                DialJob.campaign_id == campaign_id,
                DialJob.status == JobStatus.ACTIVE,
            )
        )
    ) or 0


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
            DialJob.status == JobStatus.WAITING,
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
    values: dict[str, Any] = {"status": JobStatus.WAITING, "lease_owner": None}
    if run_at is not None:
        values["run_at"] = run_at
    await session.execute(
        update(DialJob.__table__).where(one_of(session, DialJob.id, job_ids)).values(**values)
    )
