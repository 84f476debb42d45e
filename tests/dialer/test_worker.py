"""The dialer end to end, in-process: queue through the API, dial through the simulated carrier."""

from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from outdial.dialer.claimer import NO_CREDIT_RETRY
from outdial.dialer.models import DialAttempt, DialJob
from outdial.tenants.models import Tenant
from tests.conftest import create_agent, register_number
from tests.dialer.conftest import queue_drained, read_cdr, wait_until

EXPECTED = {  # last two digits → (participant status, end_reason), per API.md
    "01": ("completed", "answered"),
    "69": ("completed", "answered"),
    "70": ("failed", "no_answer"),
    "85": ("failed", "busy"),
    "95": ("completed", "voicemail"),
    "98": ("failed", "carrier_error"),
}


async def test_every_participant_reaches_its_outcome(
    client, tenant, agent, running_dialer, cdr_path, app
) -> None:
    numbers = [f"+155599900{suffix}" for suffix in EXPECTED]
    queued = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": numbers, "ring_timeout_seconds": 15},
        headers=tenant.headers,
    )
    assert queued.status_code == 202
    call_id = queued.json()["id"]
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers))
    call = (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()
    outcomes = {p["identity"][-2:]: (p["status"], p["end_reason"]) for p in call["participants"]}
    assert outcomes == EXPECTED
    assert call["status"] == "completed"
    assert call["ended_at"] is not None
    for p in call["participants"]:
        assert p["attempts"] == 1
        assert p["dialed_at"] is not None and p["ended_at"] is not None
        reached = p["end_reason"] in ("answered", "voicemail")
        assert (p["answered_at"] is not None) == reached
        assert (p["cost"] > 0) == reached
    stats = (await client.get("/v1/calls/queue/stats", headers=tenant.headers)).json()
    assert stats == {"waiting": 0, "active": 0, "completed": 3, "failed": 3}
    cdr = read_cdr(cdr_path)
    assert sorted(line["to"] for line in cdr) == sorted(numbers)
    assert {line["from"] for line in cdr} == {"+15559990000"}
    async with app.state.sessionmaker() as session:
        attempts = (await session.scalars(select(DialAttempt))).all()
    assert sorted(a.id for a in attempts) == sorted(line["attempt_id"] for line in cdr)
    assert Counter(a.status for a in attempts) == {"ended": 6}


async def test_billing_charges_answered_calls_in_30_second_increments(
    client, tenant, agent, running_dialer
) -> None:
    before = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    queued = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15559990001", "+15559990085"]},
        headers=tenant.headers,
    )
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers))
    call = (await client.get(f"/v1/calls/{queued.json()['id']}", headers=tenant.headers)).json()
    answered, busy = call["participants"]
    assert busy["cost"] == 0
    increments = -(-answered["duration_seconds"] // 30)
    assert answered["cost"] == round(increments * agent["rate_per_minute"] / 2, 6)
    after = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert after["held"] == 0
    assert round(before["balance"] - after["balance"], 6) == answered["cost"]


async def test_a_number_put_on_the_dnc_list_after_queueing_is_not_dialed(
    client, tenant, agent, running_dialer, cdr_path
) -> None:
    queued = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15559990001", "+15559990002"]},
        headers=tenant.headers,
    )
    await client.post("/v1/dnc", json={"phone_number": "+15559990002"}, headers=tenant.headers)
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers))
    call = (await client.get(f"/v1/calls/{queued.json()['id']}", headers=tenant.headers)).json()
    blocked = call["participants"][1]
    assert (blocked["status"], blocked["end_reason"]) == ("failed", "dnc")
    assert blocked["attempts"] == 0
    assert [line["to"] for line in read_cdr(cdr_path)] == ["+15559990001"]


async def test_retries_are_new_attempts_up_to_the_cap(
    client, tenant, agent, running_dialer, cdr_path
) -> None:
    queued = await client.post(
        "/v1/calls/batch",
        json={
            "agent_id": agent["id"],
            "to": ["+15559990085"],  # always busy
            "retry": {"max_attempts": 3, "on": ["busy"], "delay_seconds": 0},
        },
        headers=tenant.headers,
    )
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers))
    call = (await client.get(f"/v1/calls/{queued.json()['id']}", headers=tenant.headers)).json()
    (p,) = call["participants"]
    assert (p["status"], p["end_reason"], p["attempts"]) == ("failed", "busy", 3)
    cdr = read_cdr(cdr_path)
    assert len(cdr) == 3
    assert len({line["attempt_id"] for line in cdr}) == 3


async def test_no_credit_makes_jobs_wait_not_fail(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    """A tenant whose charges outran its balance: the dialer claims its job, finds no credit
    and puts it back to wait, while another tenant's call in the same dialer run is dialed."""
    poor = await make_tenant(credits=1)
    rich = await make_tenant()
    for tenant, caller_id in ((poor, "+15559990000"), (rich, "+15558880000")):
        await register_number(client, tenant, caller_id)
        agent = await create_agent(client, tenant)
        queued = await client.post(
            "/v1/calls/batch",
            json={"agent_id": agent["id"], "to": [caller_id[:-1] + "1"]},
            headers=tenant.headers,
        )
        assert queued.status_code == 202
    async with app.state.sessionmaker() as session, session.begin():
        (await session.get(Tenant, poor.id)).balance_micros = -1  # charges outran the balance
        queued_at = await session.scalar(select(DialJob.run_at).where(DialJob.tenant_id == poor.id))

    async def poor_job_put_back() -> bool:
        async with app.state.sessionmaker() as session:
            job = (
                await session.execute(select(DialJob).where(DialJob.tenant_id == poor.id))
            ).scalar_one()
        return job.status == "waiting" and job.run_at > queued_at

    async with running_dialer():
        await wait_until(lambda: _dialed(cdr_path, "+15558880001"))
        await wait_until(poor_job_put_back)
    async with app.state.sessionmaker() as session:
        job = (
            await session.execute(select(DialJob).where(DialJob.tenant_id == poor.id))
        ).scalar_one()
    # Claimed and put back to wait NO_CREDIT_RETRY, with no attempt counted.
    assert job.run_at - queued_at >= NO_CREDIT_RETRY - timedelta(seconds=1)
    assert job.attempt == 0
    stats = (await client.get("/v1/calls/queue/stats", headers=poor.headers)).json()
    assert stats == {"waiting": 1, "active": 0, "completed": 0, "failed": 0}
    assert [line["to"] for line in read_cdr(cdr_path)] == ["+15558880001"]


async def _dialed(cdr_path: Path, number: str) -> bool:
    return any(line["to"] == number for line in read_cdr(cdr_path))
