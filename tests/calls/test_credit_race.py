"""Racing requests through the ASGI app: credit holds are never spent twice and one
Idempotency-Key never creates two calls.

Both run on both backends. PostgreSQL is where the race is real (READ COMMITTED, row locks on
the tenant and on the idempotency key); SQLite serialises writers with BEGIN IMMEDIATE, and the
same assertions guard that this serialisation stays in place."""

import asyncio
from typing import Any

from sqlalchemy import func, select

from outdial.calls.models import Call, Participant
from outdial.dialer.models import DialJob
from tests.calls.conftest import balance, count_rows, queue_stats
from tests.conftest import create_agent, error_code, register_number

BATCHES = 20
RECIPIENTS = 10
AFFORDABLE = 5  # 25 credits / (10 recipients x 0.5 credit held each)


async def test_concurrent_batches_never_overspend(client, make_tenant, app, backend) -> None:
    tenant = await make_tenant(credits=25)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=1.0)  # holds 0.5 a recipient

    async def post(n: int) -> Any:
        numbers = [f"+1555{n:03d}{i:04d}" for i in range(RECIPIENTS)]
        body = {"agent_id": agent["id"], "to": numbers, "batch_id": f"race-{n}"}
        return await client.post("/v1/calls/batch", json=body, headers=tenant.headers)

    responses = await asyncio.gather(*(post(n) for n in range(BATCHES)))

    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * AFFORDABLE + [402] * (BATCHES - AFFORDABLE), backend
    for refused in (r for r in responses if r.status_code == 402):
        assert error_code(refused) == "insufficient_credits"
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(accepted) == AFFORDABLE

    assert await balance(client, tenant) == {
        "balance": 25.0,
        "available": 0.0,
        "held": 25.0,  # exactly K x 5, never more
        "is_active": False,
    }
    assert await count_rows(app, Call) == AFFORDABLE
    assert await count_rows(app, Participant) == AFFORDABLE * RECIPIENTS
    assert await count_rows(app, DialJob) == AFFORDABLE * RECIPIENTS
    async with app.state.sessionmaker() as session:
        stored = set(await session.scalars(select(Call.id)))
        jobs_per_call = select(DialJob.call_id, func.count()).group_by(DialJob.call_id)
        per_call = dict((await session.execute(jobs_per_call)).all())
    assert stored == accepted  # the refused requests left nothing behind
    assert per_call == dict.fromkeys(accepted, RECIPIENTS)
    assert (await queue_stats(client, tenant))["waiting"] == AFFORDABLE * RECIPIENTS


async def test_concurrent_retries_with_one_idempotency_key(
    client, tenant, agent, app, backend
) -> None:
    body = {
        "agent_id": agent["id"],
        "participants": [
            {"transport": "pstn", "identity": "+15559990001"},
            {"transport": "pstn", "identity": "+15559990002"},
            {"transport": "webrtc", "identity": "listener"},
        ],
    }
    headers = {**tenant.headers, "Idempotency-Key": "retry-storm"}

    responses = await asyncio.gather(
        *(client.post("/v1/calls", json=body, headers=headers) for _ in range(10))
    )

    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses]
    first = responses[0].json()
    assert all(r.json() == first for r in responses), backend
    replayed = [r.headers.get("Idempotent-Replayed") for r in responses]
    assert replayed.count(None) == 1  # one request did the work, nine replayed it
    assert replayed.count("true") == 9
    assert await count_rows(app, Call) == 1
    assert await count_rows(app, Participant) == 3
    assert await count_rows(app, DialJob) == 2
    assert (await balance(client, tenant))["held"] == 0.1  # two increments at 0.1/min, once
