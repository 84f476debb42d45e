"""A dial's end is settled once, however many parts of outdial learn of it: its participant's
hold is released once and its call charged once. Found under load with several dialers on
PostgreSQL: reconciliation ended a slow dialer's live call `lost` while that dialer's writer
was recording the call's answer, the answer brought the attempt back in flight, and its real
end then settled the participant again (the tenant's held credit went negative)."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select, text

from outdial.billing.models import LedgerEntry
from outdial.billing.service import get_balance
from outdial.calls.models import Participant
from outdial.calls.statuses import EndReason
from outdial.db import utcnow
from outdial.dialer import claim
from outdial.dialer.attempts import NewAttempt, attempts_by_id, new_attempt_ids, start_attempts
from outdial.dialer.claim import TenantLimits
from outdial.dialer.models import DialAttempt
from outdial.dialer.outcomes import record_call_events
from outdial.dialer.settle import Ending, settle
from outdial.telephony.base import CallEvent
from tests.conftest import TenantHandle

DIALER = "settle-test:1:dialer"


async def one_dial_started(
    app: FastAPI, client: AsyncClient, tenant: TenantHandle, agent: dict[str, Any]
) -> NewAttempt:
    """One call to one number, claimed and its attempt committed (its hold placed)."""
    response = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15557770001"], "from_number": "+15559990000"},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    now = utcnow()
    async with app.state.sessionmaker() as session, session.begin():
        [job] = await claim.claim_jobs(
            session,
            tenant=TenantLimits(tenant.id, 10, 10),
            dialer_id=DIALER,
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=10,
        )
        attempt = NewAttempt(new_attempt_ids(1)[0], job, job.attempt, now, 10.0)
        await start_attempts(session, attempts=[attempt], dialer_id=DIALER, provider="simulated")
    return attempt


async def money(app: FastAPI, tenant_id: str) -> tuple[int, int, int]:
    """The tenant's balance, its held credit and the number of charges in its ledger."""
    async with app.state.sessionmaker() as session:
        balance, held, _ = await get_balance(session, tenant_id=tenant_id)
        charges = await session.scalar(
            select(func.count()).where(
                LedgerEntry.tenant_id == tenant_id, LedgerEntry.kind == "charge"
            )
        )
    return balance, held, charges or 0


async def test_an_end_settled_twice_releases_the_hold_and_charges_once(
    app: FastAPI, client: AsyncClient, tenant: TenantHandle, agent: dict[str, Any]
) -> None:
    attempt = await one_dial_started(app, client, tenant, agent)
    balance, held, _ = await money(app, tenant.id)
    assert held > 0
    ended = Ending(attempt.job.id, attempt.id, EndReason.ANSWERED, utcnow(), talk_seconds=40)

    async with app.state.sessionmaker() as session, session.begin():
        first = await settle(session, endings=[ended, ended])
    async with app.state.sessionmaker() as session, session.begin():
        again = await settle(session, endings=[ended])
        canceled = await settle(
            session, endings=[Ending(attempt.job.id, None, EndReason.CANCELED, utcnow())]
        )

    after, held_after, charges = await money(app, tenant.id)
    assert held_after == 0
    assert charges == 1
    assert len(first) == 1 and again == canceled == []
    async with app.state.sessionmaker() as session:
        cost = await session.scalar(
            select(Participant.cost_micros).where(Participant.id == attempt.job.participant_id)
        )
    assert cost and after == balance - cost


async def test_an_answer_racing_reconciliation_leaves_the_attempt_lost(
    app: FastAPI,
    client: AsyncClient,
    tenant: TenantHandle,
    agent: dict[str, Any],
    database_url: str,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one write transaction at a time: the two cannot interleave")
    attempt = await one_dial_started(app, client, tenant, agent)
    async with app.state.sessionmaker() as session, session.begin():
        await record_call_events(session, events=[], placed=[(attempt.id, "sim-1", utcnow())])
    balance, _, _ = await money(app, tenant.id)

    # Reconciliation (another dialer, this one's lease lapsed) ends the call `lost`; before
    # it commits, this dialer's writer records the call's answer, and waits for its lock.
    async with app.state.sessionmaker() as reconciling, reconciling.begin():
        [orphan] = await attempts_by_id(reconciling, attempt_ids=[attempt.id])
        await settle(
            reconciling, endings=[Ending(orphan.job_id, orphan.id, EndReason.LOST, utcnow())]
        )
        answer = asyncio.create_task(
            write_events(app, [CallEvent(attempt.id, "answered", utcnow())])
        )
        await waiting_for_a_lock(app)
    await answer

    # The call's real end, heard later by this dialer, finds the attempt settled already.
    ended = CallEvent(attempt.id, "ended", utcnow(), EndReason.ANSWERED, talk_seconds=40)
    settled = await write_events(app, [ended])

    assert await money(app, tenant.id) == (balance, 0, 0)
    assert settled == []
    async with app.state.sessionmaker() as session:
        status = await session.scalar(
            select(DialAttempt.status).where(DialAttempt.id == attempt.id)
        )
    assert status == "lost"


async def write_events(app: FastAPI, events: list[CallEvent]) -> list[Any]:
    """Record provider events in a transaction of their own, as the dialer's writer does."""
    async with app.state.sessionmaker() as session, session.begin():
        return await record_call_events(session, events=events)


async def waiting_for_a_lock(app: FastAPI) -> None:
    """Until some other connection of this database waits for a row lock."""
    for _ in range(500):
        async with app.state.sessionmaker() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer never waited for the reconciler's lock")
