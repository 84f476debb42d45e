"""A dial that misses its pacing slot is re-slotted, not withdrawn and claimed again (issue 10
defect 5, issue 15): only while it is still this dialer's to make, only while its campaign
runs, and paced as a claim's slots are."""

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from outdial.db import utcnow
from outdial.dialer import claim
from outdial.dialer.attempts import NewAttempt, new_attempt_ids, start_attempts
from outdial.dialer.claim import ClaimedJob, TenantLimits
from outdial.dialer.models import DialAttempt, DialJob
from outdial.dialer.reslot import Missed, reslot
from tests.campaigns.conftest import add_contacts, create_campaign, fast_settings, post
from tests.conftest import TenantHandle, register_number
from tests.dialer.conftest import RunDialer, queue_drained, read_cdr, wait_until

ME = "reslot-test:1:me"


async def claimed_and_started(app: FastAPI, tenant: TenantHandle) -> list[NewAttempt]:
    """Claim the tenant's due jobs as dialer ME and commit their attempts, slotted now."""
    now = utcnow()
    async with app.state.sessionmaker() as session, session.begin():
        jobs = await claim.claim_jobs(
            session,
            tenant=TenantLimits(tenant.id, 50, 10),
            dialer_id=ME,
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=50,
        )
        attempts = [
            NewAttempt(i, job, 1, now, 10.0)
            for i, job in zip(new_attempt_ids(len(jobs)), jobs, strict=True)
        ]
        await start_attempts(session, attempts=attempts, dialer_id=ME, provider="simulated")
    return attempts


async def reslot_now(app: FastAPI, jobs: list[ClaimedJob], ids: list[str]) -> dict[str, float]:
    async with app.state.sessionmaker() as session, session.begin():
        got = await reslot(
            session,
            missed=[Missed(i, job, 10.0) for i, job in zip(ids, jobs, strict=True)],
            dialer_id=ME,
            lease_until=utcnow() + timedelta(seconds=30),
            now=time.time(),
            horizon=2.0,
            cursor=0.0,
            dials_per_second=1000.0,
        )
    return got.slots


async def dial_at(app: FastAPI, attempt_id: str) -> datetime:
    async with app.state.sessionmaker() as session:
        at = await session.scalar(select(DialAttempt.dial_at).where(DialAttempt.id == attempt_id))
    assert at is not None
    return at


async def test_only_dials_still_ours_to_make_get_a_new_slot(
    app: FastAPI, client: httpx.AsyncClient, tenant: TenantHandle, agent: dict[str, Any]
) -> None:
    numbers = ["+15559990001", "+15559990002", "+15559990003"]
    response = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": numbers, "from_number": "+15559990000"},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    attempts = sorted(await claimed_and_started(app, tenant), key=lambda a: a.job.to_number)
    ours, taken_over, placed = attempts
    async with app.state.sessionmaker() as session, session.begin():
        # Another dialer took this job over (this one's lease had lapsed) …
        await session.execute(
            update(DialJob).where(DialJob.id == taken_over.job.id).values(lease_owner="other")
        )
        # … and the carrier already has this one: it is not ours to hold back any more.
        await session.execute(
            update(DialAttempt).where(DialAttempt.id == placed.id).values(status="placed")
        )
    before = {a.id: await dial_at(app, a.id) for a in attempts}

    slots = await reslot_now(app, [a.job for a in attempts], [a.id for a in attempts])

    assert list(slots) == [ours.id]
    assert slots[ours.id] >= time.time() - 1
    assert (await dial_at(app, ours.id)).timestamp() == pytest.approx(slots[ours.id])
    assert await dial_at(app, taken_over.id) == before[taken_over.id]
    assert await dial_at(app, placed.id) == before[placed.id]


async def test_a_paused_campaigns_dials_get_no_new_slot_until_it_resumes(
    app: FastAPI, client: httpx.AsyncClient, tenant: TenantHandle, agent: dict[str, Any]
) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    await add_contacts(client, tenant, campaign_id, ["+15556660001", "+15556660002"])
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200
    attempts = await claimed_and_started(app, tenant)
    assert len(attempts) == 2 and all(a.job.campaign_id == campaign_id for a in attempts)
    jobs, ids = [a.job for a in attempts], [a.id for a in attempts]

    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")).status_code == 200
    assert await reslot_now(app, jobs, ids) == {}

    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/resume")).status_code == 200
    assert set(await reslot_now(app, jobs, ids)) == set(ids)


async def test_a_stalled_dialer_re_slots_its_missed_dials_and_keeps_the_pace(
    app: FastAPI,
    client: httpx.AsyncClient,
    make_tenant,
    running_dialer: RunDialer,
    cdr_path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="outdial.dialer")
    cps = 10
    tenant = await make_tenant(calls_per_second=cps)
    await register_number(client, tenant, "+15559990000")
    response = await client.post("/v1/agents", json={"name": "Ava"}, headers=tenant.headers)
    agent_id = response.json()["id"]
    numbers = [f"+15557770{n:03d}" for n in range(20)]
    response = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent_id, "to": numbers, "from_number": "+15559990000"},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text

    async with running_dialer() as dialer:
        schedule = dialer.placer.schedule
        stalled = False

        def schedule_then_stall(*args: Any, **kwargs: Any) -> None:
            # The loop freezes for 0.4 s right after the first claim is scheduled (a full
            # garbage collection, a busy machine): the dials slotted in that time miss.
            nonlocal stalled
            schedule(*args, **kwargs)
            if not stalled:
                stalled = True
                asyncio.get_running_loop().call_soon(time.sleep, 0.4)

        dialer.placer.schedule = schedule_then_stall  # type: ignore[method-assign]

        async def drained() -> bool:
            return await queue_drained(client, tenant.headers)

        await wait_until(drained, within=30)

    messages = [r.getMessage() for r in caplog.records]
    assert any("re-slotted" in m for m in messages)
    assert not any("handed back" in m for m in messages)
    # Each number dialed once, by its first and only attempt: nothing went back to the queue.
    cdr = read_cdr(cdr_path)
    assert sorted(line["to"] for line in cdr) == numbers
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(DialAttempt)) == len(numbers)
        assert set(await session.scalars(select(DialJob.attempt))) == {1}
    # The re-slotted dials kept the caller ID's pace: no second holds more than `cps` dials.
    times = sorted(datetime.fromisoformat(line["at"]).timestamp() for line in cdr)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 1.0) <= cps


async def test_a_batch_with_the_largest_metadata_is_dialed_once_each(
    app: FastAPI,
    client: httpx.AsyncClient,
    make_tenant,
    running_dialer: RunDialer,
    cdr_path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 10 defect 5: recipients carrying as much metadata as allowed (16 KB each) were
    claimed, missed their slots and were claimed again, forever. They must be dialed, once."""
    caplog.set_level(logging.INFO, logger="outdial.dialer")
    tenant = await make_tenant(calls_per_second=100, max_concurrency=100)
    await register_number(client, tenant, "+15559990000")
    response = await client.post("/v1/agents", json={"name": "Ava"}, headers=tenant.headers)
    agent_id = response.json()["id"]
    numbers = [f"+15557771{n:03d}" for n in range(100)]
    padding = "x" * (16 * 1024 - 100)  # just under the limit, serialised
    response = await client.post(
        "/v1/calls/batch",
        json={
            "agent_id": agent_id,
            "from_number": "+15559990000",
            "recipients": [{"to": n, "metadata": {"notes": padding}} for n in numbers],
        },
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text

    async with running_dialer():

        async def drained() -> bool:
            return await queue_drained(client, tenant.headers)

        await wait_until(drained, within=60)

    assert sorted(line["to"] for line in read_cdr(cdr_path)) == numbers
    assert not any("handed back" in r.getMessage() for r in caplog.records)
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(DialAttempt)) == len(numbers)
