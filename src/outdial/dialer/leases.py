"""Dialer leases: one row per dialer renewed by its heartbeat and claims; jobs of dialers whose
lease lapsed are taken over for reconciliation."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import (
    dialect_insert,
    one_of,
)
from outdial.dialer.models import DialAttempt, DialerLease, DialJob
from outdial.dialer.statuses import JobStatus


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
        .where(DialJob.status == JobStatus.ACTIVE, ~holder_alive)
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
        .where(DialJob.status == JobStatus.ACTIVE, DialJob.lease_owner == DialerLease.dialer_id)
        .exists()
    )
    await session.execute(
        delete(DialerLease.__table__).where(
            DialerLease.lease_expires_at < expired_before, ~holds_jobs
        )
    )


async def held_by_placer(
    session: AsyncSession, *, attempt_ids: Sequence[str], now: datetime
) -> set[str]:
    """Those of these attempts whose job the dialer that placed them still holds, its lease
    not lapsed: that dialer is alive, and hears from its provider what becomes of them."""
    if not attempt_ids:
        return set()
    rows = await session.scalars(
        select(DialAttempt.id)
        .join(DialJob, DialJob.id == DialAttempt.job_id)
        .join(DialerLease, DialerLease.dialer_id == DialAttempt.dialer_id)
        .where(
            one_of(session, DialAttempt.id, attempt_ids),
            DialJob.lease_owner == DialAttempt.dialer_id,
            DialerLease.lease_expires_at >= now,
        )
    )
    return set(rows)
