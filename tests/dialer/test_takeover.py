"""A dialer whose lease lapses while it is alive (starved: its claim's renewal not yet
committed, its heartbeat queued behind that claim) still places its dials at their slots.
Reconciliation taking its jobs over must not find such a dial "never received" before its
slot and withdraw it: the number would be dialed twice (39 numbers were, in one run of the
pause test with the machine loaded)."""

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from outdial.db import utcnow
from outdial.dialer import claim
from outdial.dialer.attempts import NewAttempt, new_attempt_ids, start_attempts
from outdial.dialer.claim import TenantLimits
from outdial.dialer.live import LiveCalls
from outdial.dialer.models import DialAttempt, DialJob
from outdial.dialer.placer import MAX_DIAL_LATENESS
from outdial.dialer.reconciler import Reconciler
from outdial.telephony.base import CallEvent, DialRequest
from outdial.telephony.simulated import SimulatedProvider
from tests.conftest import TenantHandle
from tests.dialer.conftest import read_cdr

SLOW = "takeover-test:1:slow"


async def ignore(_: CallEvent) -> None:
    """The slow dialer's provider events: what becomes of its call is not this test's."""


async def test_a_starved_dialers_dial_is_not_withdrawn_before_its_slot(
    app: FastAPI,
    client: AsyncClient,
    tenant: TenantHandle,
    agent: dict[str, Any],
    cdr_path: Path,
) -> None:
    response = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15557770002"], "from_number": "+15559990000"},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    now = utcnow()
    slot = now + timedelta(seconds=1)
    async with app.state.sessionmaker() as session, session.begin():
        # Its lease, as committed, has lapsed already: the slow dialer's renewal is late.
        [job] = await claim.claim_jobs(
            session,
            tenant=TenantLimits(tenant.id, 10, 10),
            dialer_id=SLOW,
            now=now,
            lease_until=now - timedelta(seconds=1),
            limit=10,
        )
        attempt = NewAttempt(new_attempt_ids(1)[0], job, job.attempt, slot, 10.0)
        await start_attempts(session, attempts=[attempt], dialer_id=SLOW, provider="simulated")

    slow = SimulatedProvider(ignore, speed=1000, cdr_path=str(cdr_path))
    other = SimulatedProvider(ignore, speed=1000, cdr_path=str(cdr_path))

    async def place_at_its_slot() -> None:
        """The slow dialer's placer: the dial goes to the carrier at its slot, on time."""
        await asyncio.sleep(slot.timestamp() - time.time())
        assert time.time() - slot.timestamp() <= MAX_DIAL_LATENESS
        await slow.place(
            DialRequest(
                attempt_id=attempt.id,
                to=job.to_number,
                from_number=job.from_number,
                ring_timeout_seconds=30,
            )
        )

    reconciler = Reconciler(
        app.state.sessionmaker,
        other,
        LiveCalls(),
        dialer_id="takeover-test:2:other",
        lease=timedelta(seconds=2),
    )
    try:
        placing = asyncio.create_task(place_at_its_slot())
        assert await reconciler.reconcile_expired() == 1
        await placing
    finally:
        await slow.aclose()
        await other.aclose()

    assert [line["to"] for line in read_cdr(cdr_path)] == [job.to_number]
    async with app.state.sessionmaker() as session:
        status = await session.scalar(select(DialJob.status).where(DialJob.id == job.id))
        left = await session.scalar(select(DialAttempt.status).where(DialAttempt.id == attempt.id))
    # The carrier had it: not back in the queue to be dialed again. (The simulated carrier
    # cannot tell another process's call apart from a lost one.)
    assert status != "waiting"
    assert left == "lost"
