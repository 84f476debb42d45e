"""How a claimed job may be dialed: its call's (or its source's) dialing policy, and the
checks made right before a dial (DNC, credit, the caller ID still owned by the call's
tenant, the agent not deleted)."""

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.billing import service as billing
from outdial.calls.models import Call
from outdial.calls.schemas import DEFAULT_MAX_ATTEMPTS_PER_24H
from outdial.db import one_of
from outdial.dialer.models import DialAttempt
from outdial.dialer.sources import SourcePolicy, source
from outdial.dnc.models import DncEntry
from outdial.numbers.models import PhoneNumber


@dataclass(frozen=True, slots=True)
class DialPolicy:
    """How a call's jobs are dialed: from the call, or from its campaign's settings as
    they are when the job is claimed or settled (a PUT while paused applies on resume)."""

    calling_window: dict[str, Any] | None
    retry: dict[str, Any] | None
    ring_timeout_seconds: int
    voicemail_behavior: str
    rate_per_minute_micros: int
    streams: bool
    """Whether its agent has a stream_url: answered calls are connected to it."""
    calls_per_second: float | None = None
    """A campaign's own pace for its caller ID, within the tenant's."""
    max_attempts: int | None = None
    """A campaign's current retry cap, over the one its jobs were queued with."""
    agent_exists: bool = True
    """False once the call's agent is deleted: its jobs are no longer dialed."""
    state_rules: bool = False
    """Whether state rules bind it: its state's hours on top of the window, and the cap."""
    max_attempts_per_24h: int = DEFAULT_MAX_ATTEMPTS_PER_24H
    """Under state rules: the most dials of its number in any 24 hours, the tenant's all."""


async def policies_for(session: AsyncSession, *, call_ids: Iterable[str]) -> dict[str, DialPolicy]:
    """Each call's dialing policy, its source's current settings taking precedence."""
    rows = (
        await session.execute(
            select(
                Call.id,
                Call.campaign_id,
                Call.calling_window,
                Call.retry,
                Call.ring_timeout_seconds,
                Call.state_rules,
                Call.max_attempts_per_24h,
                Agent.voicemail_behavior,
                Agent.rate_per_minute_micros,
                Agent.stream_url.is_not(None).label("streams"),
                Agent.deleted_at.is_(None).label("agent_exists"),
            )
            .join(Agent, Agent.id == Call.agent_id)
            .where(one_of(session, Call.id, call_ids))
        )
    ).all()
    sources = {row.campaign_id for row in rows if row.campaign_id is not None}
    overrides = await source().policies(session, source_ids=sources) if sources else {}
    return {row.id: _policy(row, overrides.get(row.campaign_id)) for row in rows}


def _policy(row: Any, override: SourcePolicy | None) -> DialPolicy:
    if override is None:
        return DialPolicy(
            row.calling_window,
            row.retry,
            row.ring_timeout_seconds,
            row.voicemail_behavior,
            row.rate_per_minute_micros,
            row.streams,
            agent_exists=row.agent_exists,
            state_rules=row.state_rules,
            max_attempts_per_24h=row.max_attempts_per_24h or DEFAULT_MAX_ATTEMPTS_PER_24H,
        )
    return DialPolicy(
        override.calling_window,
        override.retry,
        override.ring_timeout_seconds,
        row.voicemail_behavior,
        row.rate_per_minute_micros,
        row.streams,
        calls_per_second=override.calls_per_second,
        max_attempts=override.max_attempts,
        agent_exists=row.agent_exists,
        state_rules=override.state_rules,
        max_attempts_per_24h=override.max_attempts_per_24h,
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


async def owned_caller_ids(
    session: AsyncSession, *, tenant_id: str, numbers: Iterable[str]
) -> set[str]:
    """Those of these caller IDs the tenant still owns, read right before dialing: a number
    released since its calls were queued (perhaps registered by another tenant since) is
    never dialed from."""
    rows = await session.scalars(
        select(PhoneNumber.phone_number).where(
            PhoneNumber.tenant_id == tenant_id,
            one_of(session, PhoneNumber.phone_number, set(numbers)),
        )
    )
    return set(rows)


async def recent_dials(
    session: AsyncSession, *, tenant_id: str, numbers: Collection[str], since: datetime
) -> dict[str, tuple[int, datetime]]:
    """How many times the tenant has dialed each of these numbers since `since`, and when the
    first of those dials was (numbers not dialed since are left out): the frequency cap's
    count, one probe of an index for a whole claim. A dial counts from its slot (`dial_at`),
    the time it was placed at the earliest."""
    if not numbers:
        return {}
    rows = await session.execute(
        select(DialAttempt.to_number, func.count(), func.min(DialAttempt.dial_at))
        .where(
            DialAttempt.tenant_id == tenant_id,
            one_of(session, DialAttempt.to_number, numbers),
            DialAttempt.dial_at > since,
        )
        .group_by(DialAttempt.to_number)
    )
    return {number: (count, first) for number, count, first in rows}


async def available_credit(session: AsyncSession, *, tenant_id: str) -> int:
    """The tenant's balance less its holds, in micro-credits. Below zero, charges have outrun
    the balance: such a tenant's jobs wait, not fail."""
    return await billing.available_micros(session, tenant_id=tenant_id)
