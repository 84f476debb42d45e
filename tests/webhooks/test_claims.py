"""Claims and leases: any number of delivery processes, none sending a delivery another is
sending; a lease that runs out makes the delivery due again; a late result changes nothing."""

import asyncio
from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from outdial.db import utcnow
from outdial.webhooks import deliveries
from outdial.webhooks import worker as worker_module
from outdial.webhooks.deliveries import Outcome
from outdial.webhooks.models import WebhookDelivery
from tests.webhooks.conftest import Clock, Emit, MakeWorker, Subscribe, event, lease_due
from tests.webhooks.receiver import Receiver


async def rows(app: FastAPI) -> list[WebhookDelivery]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.seq)))


async def test_concurrent_claims_never_share_a_delivery(
    app: FastAPI, tenant, receiver: Receiver, subscribe: Subscribe, emit: Emit, clock: Clock
) -> None:
    await subscribe(tenant, receiver)
    await emit(*(event(tenant, f"call_{i}") for i in range(150)))

    async def claim() -> list[int]:
        async with app.state.sessionmaker() as session, session.begin():
            claimed = await deliveries.claim(
                session,
                now=clock(),
                lease=timedelta(seconds=30),
                limit=40,
                endpoint_busy={},
                endpoint_cap=1000,
            )
            await asyncio.sleep(0.05)  # hold the locks while the others claim
            return [c.seq for c in claimed]

    taken: list[int] = []
    while claims := [seqs for seqs in await asyncio.gather(*(claim() for _ in range(5))) if seqs]:
        taken += [seq for seqs in claims for seq in seqs]
    assert len(taken) == len(set(taken)) == 150  # each claimed once, by one claim
    assert {r.status for r in await rows(app)} == {"sending"}


@pytest.mark.postgresql_only  # SQLite runs one writer at a time: a second claim waits
async def test_a_locked_delivery_is_skipped_not_waited_for(
    app: FastAPI, tenant, receiver: Receiver, subscribe: Subscribe, emit: Emit, clock: Clock
) -> None:
    await subscribe(tenant, receiver)
    await emit(*(event(tenant, f"call_{i}") for i in range(10)))
    # Read after emitting: on a loaded machine the setup can outlast the fixture's lead.
    clock.now = utcnow() + timedelta(seconds=1)
    claim_args = {
        "lease": timedelta(seconds=30),
        "endpoint_busy": {},
        "endpoint_cap": 1000,
    }
    async with app.state.sessionmaker() as first, first.begin():
        held = await deliveries.claim(first, now=clock(), limit=4, **claim_args)
        async with app.state.sessionmaker() as second, second.begin():
            rest = await asyncio.wait_for(
                deliveries.claim(second, now=clock(), limit=100, **claim_args), 5
            )
    assert len(held) == 4 and len(rest) == 6
    assert not {c.seq for c in held} & {c.seq for c in rest}


async def test_an_expired_lease_is_claimed_again_and_the_late_result_is_ignored(
    app: FastAPI,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    await subscribe(tenant, receiver)
    await emit(event(tenant))
    [stale] = await lease_due(app, clock())  # claimed by a process that then froze
    other = make_worker(clock)
    clock.advance(seconds=29)  # the lease is twice the 15 s timeout
    assert await other.deliver_due() == []
    clock.advance(seconds=2)
    [sent] = await other.deliver_due()
    assert sent.status_code == 200 and sent.claimed.attempt == stale.attempt + 1
    assert sent.claimed.seq == stale.seq

    # The frozen process wakes and writes a failure for its old attempt: only logged.
    late = Outcome(
        claimed=stale,
        started_at=clock(),
        duration_ms=3,
        status_code=500,
        error=None,
        response="late",
    )
    async with app.state.sessionmaker() as session, session.begin():
        await deliveries.record(session, [late], schedule=other.schedule)
    [row] = await rows(app)
    assert row.status == "delivered" and row.attempts == 2 and row.next_attempt_at is None


async def test_stopping_gives_back_what_it_has_not_sent(
    app: FastAPI,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "SHUTDOWN_GRACE_SECONDS", 0.1)
    await subscribe(tenant, receiver)
    receiver.delay = 3
    await emit(event(tenant))
    stop = asyncio.Event()
    stopping = make_worker()
    running = asyncio.create_task(stopping.run(stop))
    await receiver.wait_for(1)
    stop.set()
    await asyncio.wait_for(running, 5)
    [row] = await rows(app)
    assert row.status == "pending" and row.attempts == 1
    # Due at once for the next process, which sends it with the same webhook-id.
    receiver.delay = 0
    [again] = await make_worker().deliver_due()
    assert again.status_code == 200 and again.claimed.attempt == 2
    assert len(set(receiver.ids())) == 1


async def test_several_processes_send_each_event_once(
    app: FastAPI, tenant, receiver: Receiver, subscribe: Subscribe, emit: Emit, make_worker
) -> None:
    await subscribe(tenant, receiver)
    await emit(*(event(tenant, f"call_{i % 40}", step=i // 40) for i in range(120)))
    stop = asyncio.Event()
    workers = [asyncio.create_task(make_worker().run(stop)) for _ in range(3)]
    try:
        await receiver.wait_for(120, within=30)
        await asyncio.sleep(0.2)  # anything sent twice would arrive by now
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert len(receiver.received) == 120
    assert len(set(receiver.ids())) == 120
    for key in range(40):
        steps = [
            e["data"]["step"] for e in receiver.events if e["data"]["call_id"] == f"call_{key}"
        ]
        assert steps == sorted(steps)  # each call's events in order, whichever process sent them
    assert {r.status for r in await rows(app)} == {"delivered"}


async def test_outcomes_the_database_refuses_do_not_stop_the_worker(
    app: FastAPI, tenant, receiver: Receiver, subscribe: Subscribe, emit: Emit, make_worker
) -> None:
    await subscribe(tenant, receiver)
    await emit(event(tenant, "call_1"))
    worker = make_worker()
    [outcome] = await worker.deliver_due()
    # The same attempt written twice breaks the attempt log's key: that round fails...
    worker._outcomes.append(outcome)
    async with worker._client() as http:
        worker._http = http
        assert await worker._round(claim=10) is None
    assert worker._outcomes == []  # ...and its outcomes are dropped, not retried forever
    await emit(event(tenant, "call_2"))
    [next_one] = await worker.deliver_due()
    assert next_one.status_code == 200
    assert [e["data"]["call_id"] for e in receiver.events] == ["call_1", "call_2"]
