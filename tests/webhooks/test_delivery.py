"""The delivery worker against real receivers on loopback: signatures, retries on the
contract's schedule (with a clock the test moves), 410, five days of failure, ordering,
fairness between endpoints, tenancy, the delivery log and manual retries, pruning."""

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from outdial.app import create_app
from outdial.db import utcnow
from outdial.webhooks.models import WebhookAttempt, WebhookDelivery
from outdial.webhooks.outbox import EventType
from outdial.webhooks.worker import USER_AGENT
from tests.conftest import TenantHandle, error_code
from tests.webhooks.conftest import (
    SCHEDULE,
    Clock,
    Emit,
    MakeWorker,
    Subscribe,
    event,
    lease_due,
    worker_settings,
)
from tests.webhooks.receiver import Receiver, receiving


async def delivery_log(
    client: httpx.AsyncClient, tenant: TenantHandle, webhook_id: str, **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", params=params, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def webhook(client: httpx.AsyncClient, tenant: TenantHandle, webhook_id: str) -> dict:
    return (await client.get(f"/v1/webhooks/{webhook_id}", headers=tenant.headers)).json()


async def test_delivered_signed_and_logged(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    await emit(event(tenant, "call_1", status="dialing"))
    [outcome] = await make_worker().deliver_due()
    assert outcome.status_code == 200 and outcome.error is None

    [request] = receiver.received
    assert request.verified  # standardwebhooks.Webhook(secret).verify(body, headers)
    assert request.path == "/hooks"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["webhook-id"].startswith("evt_")
    body = request.event
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "call.participant.updated"
    assert body["data"] == {"call_id": "call_1", "status": "dialing"}

    [logged] = await delivery_log(client, tenant, endpoint["id"])
    assert logged["event_id"] == request.webhook_id
    assert logged["event_type"] == "call.participant.updated"
    assert logged["status"] == "delivered"
    assert logged["attempt_count"] == 1
    assert logged["next_attempt_at"] is None
    assert logged["finished_at"] is not None
    assert logged["event"] == body
    [attempt] = logged["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 200
    assert attempt["error"] is None and attempt["response"] is None
    assert attempt["next_retry_at"] is None
    assert attempt["duration_ms"] >= 0
    # Nothing more to send.
    assert await make_worker().deliver_due() == []


async def test_two_tenants_see_only_their_own_events(
    tenant, make_tenant, subscribe: Subscribe, emit: Emit, make_worker: MakeWorker
) -> None:
    other = await make_tenant()
    async with receiving() as mine, receiving() as theirs:
        await subscribe(tenant, mine)
        await subscribe(other, theirs)
        await emit(*(event(tenant, f"call_mine_{i}") for i in range(5)))
        await emit(*(event(other, f"call_theirs_{i}") for i in range(3)))
        await emit(event(tenant, "call_mine_5"), event(other, "call_theirs_3"))
        sent = await make_worker().deliver_due()
        assert len(sent) == 10
        assert sorted(e["data"]["call_id"] for e in mine.events) == [
            f"call_mine_{i}" for i in range(6)
        ]
        assert sorted(e["data"]["call_id"] for e in theirs.events) == [
            f"call_theirs_{i}" for i in range(4)
        ]
        # Each receiver verifies with its own secret: signed with the right one.
        assert all(r.verified for r in mine.received + theirs.received)


async def test_retries_follow_the_schedule_then_give_up(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    receiver.answer = lambda _: 503
    await emit(event(tenant, "call_1"))
    worker = make_worker(clock)

    for attempt, delay in enumerate([*SCHEDULE, None], start=1):
        [outcome] = await worker.deliver_due()
        assert outcome.status_code == 503 and outcome.claimed.attempt == attempt
        [logged] = await delivery_log(client, tenant, endpoint["id"])
        last = logged["attempts"][-1]
        if delay is None:
            assert logged["status"] == "failed"
            assert last["next_retry_at"] is None and logged["next_attempt_at"] is None
            break
        assert logged["status"] == "pending"
        finished = outcome.finished_at
        assert last["next_retry_at"] == logged["next_attempt_at"]
        due = (finished + timedelta(seconds=delay)).isoformat().replace("+00:00", "Z")
        assert logged["next_attempt_at"] == due
        # Not a moment before it is due.
        clock.advance(seconds=delay - 0.5)
        assert await worker.deliver_due() == []
        clock.advance(seconds=1)

    assert len(receiver.received) == len(SCHEDULE) + 1
    assert len(set(receiver.ids())) == 1  # the same webhook-id every time
    assert len({r.body for r in receiver.received}) == 1  # and the same bytes
    assert all(r.verified for r in receiver.received)
    assert [a["response"] for a in logged["attempts"]] == ["nope"] * (len(SCHEDULE) + 1)
    # 3 days and some hours of failures: the endpoint stays enabled (5 days disable it).
    assert (await webhook(client, tenant, endpoint["id"]))["status"] == "enabled"
    clock.advance(days=30)
    assert await worker.deliver_due() == []


async def test_timeouts_and_connection_errors_are_retried(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    await emit(event(tenant, "call_1"))
    receiver.delay = 0.5
    worker = make_worker(clock, webhook_timeout_seconds=0.2)
    [timed_out] = await worker.deliver_due()
    assert timed_out.status_code is None and timed_out.error == "no answer within 0.2 s"
    assert 150 <= timed_out.duration_ms < 450

    # Nothing listens on the endpoint's port any more.
    await client.put(
        f"/v1/webhooks/{endpoint['id']}",
        json={"url": "http://127.0.0.1:9/closed"},
        headers=tenant.headers,
    )
    clock.advance(seconds=SCHEDULE[0] + 1)
    [refused] = await worker.deliver_due()
    assert refused.status_code is None and "Cannot connect to host 127.0.0.1:9" in refused.error
    [logged] = await delivery_log(client, tenant, endpoint["id"])
    assert [a["error"] is not None for a in logged["attempts"]] == [True, True]
    assert logged["status"] == "pending" and logged["attempt_count"] == 2


async def test_410_disables_the_endpoint_at_once(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    receiver.answer = lambda r: 410 if r.event["data"]["call_id"] == "call_gone" else 500
    await emit(event(tenant, "call_gone"), event(tenant, "call_other"))
    worker = make_worker(clock)
    assert {o.status_code for o in await worker.deliver_due()} == {410, 500}

    disabled = await webhook(client, tenant, endpoint["id"])
    assert disabled["status"] == "disabled" and disabled["disabled_reason"] == "gone"
    log = {
        d["event"]["data"]["call_id"]: d for d in await delivery_log(client, tenant, endpoint["id"])
    }
    assert log["call_gone"]["status"] == "failed"  # not retried
    assert log["call_other"]["status"] == "pending"  # held back while disabled
    assert log["call_other"]["next_attempt_at"] is None

    # Events of a disabled endpoint are not queued, and nothing is sent to it.
    await emit(event(tenant, "call_while_disabled"))
    clock.advance(days=1)
    assert await worker.deliver_due() == []
    assert len(await delivery_log(client, tenant, endpoint["id"])) == 2

    # Enabled again: what it held back is due at once.
    receiver.answer = lambda _: 200
    enabled = await client.put(
        f"/v1/webhooks/{endpoint['id']}", json={"status": "enabled"}, headers=tenant.headers
    )
    assert enabled.json()["status"] == "enabled" and enabled.json()["failing_since"] is None
    [resent] = await worker.deliver_due()
    assert resent.status_code == 200 and resent.claimed.attempt == 2
    assert receiver.events[-1]["data"]["call_id"] == "call_other"


async def test_five_days_of_failure_disable_the_endpoint(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    worker = make_worker(clock)
    receiver.answer = lambda _: 500
    await emit(event(tenant, "call_1"))
    [first] = await worker.deliver_due()
    failing = await webhook(client, tenant, endpoint["id"])
    assert failing["status"] == "enabled"
    started = first.finished_at.isoformat().replace("+00:00", "Z")
    assert failing["failing_since"] == started

    # A success stops the clock.
    receiver.answer = lambda _: 200
    clock.advance(seconds=SCHEDULE[0] + 1)
    await worker.deliver_due()
    assert (await webhook(client, tenant, endpoint["id"]))["failing_since"] is None

    # Failures again, for 5 days: disabled at the first failure past them.
    receiver.answer = lambda _: 500
    await emit(event(tenant, "call_2"))
    clock.now = max(clock.now, first.finished_at) + timedelta(seconds=1)
    await worker.deliver_due()
    restarted = (await webhook(client, tenant, endpoint["id"]))["failing_since"]
    assert restarted is not None and restarted != started
    clock.advance(days=4, hours=23)
    await emit(event(tenant, "call_3"))
    await worker.deliver_due()
    assert (await webhook(client, tenant, endpoint["id"]))["status"] == "enabled"
    clock.advance(hours=2)
    await emit(event(tenant, "call_4"))
    await worker.deliver_due()
    disabled = await webhook(client, tenant, endpoint["id"])
    assert disabled["status"] == "disabled" and disabled["disabled_reason"] == "failing"


async def test_events_of_one_key_go_in_order(
    tenant, receiver: Receiver, subscribe: Subscribe, emit: Emit, make_worker: MakeWorker
) -> None:
    await subscribe(tenant, receiver)
    for step in range(4):
        await emit(event(tenant, "call_a", step=step), event(tenant, "call_b", step=step))
    worker = make_worker()
    rounds = []
    while sent := await worker.deliver_due():
        rounds.append(sorted(json.loads(o.claimed.payload)["data"]["call_id"] for o in sent))
    # One delivery per key at a time: the next is sent once the one before it is delivered.
    assert rounds == [["call_a", "call_b"]] * 4
    for key in ("call_a", "call_b"):
        steps = [e["data"]["step"] for e in receiver.events if e["data"]["call_id"] == key]
        assert steps == [0, 1, 2, 3]


async def test_a_failing_event_does_not_hold_up_the_rest(
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    await subscribe(tenant, receiver)
    receiver.answer = lambda r: 500 if r.event["data"]["step"] == 0 else 200
    await emit(*(event(tenant, "call_a", step=step) for step in range(3)))
    worker = make_worker(clock)
    [failed] = await worker.deliver_due()
    assert failed.status_code == 500
    # Step 0 now waits for its retry; steps 1 and 2 go on, in their order.
    assert [o.status_code for o in await worker.deliver_due()] == [200]
    assert [o.status_code for o in await worker.deliver_due()] == [200]
    assert [e["data"]["step"] for e in receiver.events] == [0, 1, 2]
    receiver.answer = lambda _: 200
    clock.advance(seconds=SCHEDULE[0] + 1)
    [retried] = await worker.deliver_due()
    assert retried.status_code == 200 and json.loads(retried.claimed.payload)["data"]["step"] == 0


async def test_a_slow_endpoint_holds_only_its_own_slots(
    app: FastAPI,
    tenant,
    make_tenant,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    """A receiver that never answers in time costs its endpoint's slots for the timeout;
    another tenant's endpoint is served meanwhile."""
    other = await make_tenant()
    async with receiving() as slow, receiving() as fast:
        slow.delay = 5
        await subscribe(tenant, slow)
        await subscribe(other, fast)
        await emit(*(event(tenant, f"call_slow_{i}") for i in range(40)))
        await emit(*(event(other, f"call_fast_{i}") for i in range(20)))
        worker = make_worker(webhook_timeout_seconds=1.0, webhook_endpoint_concurrency=4)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await fast.wait_for(20, within=5)
            assert len(slow.received) <= 4  # its 4 slots, each held for the 1 s timeout
        finally:
            stop.set()
            await asyncio.wait_for(running, 15)
    assert slow.most_in_flight == 4
    assert all(r.verified for r in fast.received)


async def test_manual_retry_sends_again_with_the_same_id(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    await emit(event(tenant, "call_1"))
    worker = make_worker()
    await worker.deliver_due()
    [delivered] = await delivery_log(client, tenant, endpoint["id"])
    path = f"/v1/webhooks/{endpoint['id']}/deliveries/{delivered['id']}/retry"

    response = await client.post(path, headers=tenant.headers)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert response.json()["finished_at"] is None
    [again] = await worker.deliver_due()
    assert again.status_code == 200 and again.claimed.attempt == 2
    assert receiver.ids() == [delivered["event_id"]] * 2
    assert receiver.received[0].body == receiver.received[1].body
    [logged] = await delivery_log(client, tenant, endpoint["id"])
    assert [a["attempt"] for a in logged["attempts"]] == [1, 2]
    assert logged["status"] == "delivered"

    # A delivery being sent right now is not sent twice at once.
    await client.post(path, headers=tenant.headers)
    await lease_due(app, utcnow() + timedelta(seconds=1))  # a send still running
    busy = await client.post(path, headers=tenant.headers)
    assert busy.status_code == 409 and error_code(busy) == "delivery_in_progress"

    unknown = await client.post(
        f"/v1/webhooks/{endpoint['id']}/deliveries/dlv_00000000ffff/retry", headers=tenant.headers
    )
    assert unknown.status_code == 404 and error_code(unknown) == "delivery_not_found"
    for bad in ("x", "dlv_zz", "evt_1"):
        missing = await client.post(
            f"/v1/webhooks/{endpoint['id']}/deliveries/{bad}/retry", headers=tenant.headers
        )
        assert error_code(missing) == "delivery_not_found"

    await client.put(
        f"/v1/webhooks/{endpoint['id']}", json={"status": "disabled"}, headers=tenant.headers
    )
    disabled = await client.post(path, headers=tenant.headers)
    assert disabled.status_code == 409 and error_code(disabled) == "webhook_disabled"


async def test_the_delivery_log_pages_and_filters(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    receiver.answer = lambda r: 500 if r.event["data"]["call_id"] == "call_2" else 200
    await emit(*(event(tenant, f"call_{i}") for i in range(5)))
    await make_worker().deliver_due()
    first = await client.get(
        f"/v1/webhooks/{endpoint['id']}/deliveries?limit=2", headers=tenant.headers
    )
    page = first.json()
    assert [d["event"]["data"]["call_id"] for d in page["data"]] == ["call_0", "call_1"]
    rest = await delivery_log(client, tenant, endpoint["id"], after=page["next_cursor"])
    assert [d["event"]["data"]["call_id"] for d in rest] == ["call_2", "call_3", "call_4"]
    pending = await delivery_log(client, tenant, endpoint["id"], status="pending")
    assert [d["event"]["data"]["call_id"] for d in pending] == ["call_2"]
    assert pending[0]["attempts"][0]["status_code"] == 500
    assert pending[0]["attempts"][0]["next_retry_at"] == pending[0]["next_attempt_at"]

    for params in ({"after": "nonsense"}, {"status": "lost"}, {"limit": 0}):
        response = await client.get(
            f"/v1/webhooks/{endpoint['id']}/deliveries", params=params, headers=tenant.headers
        )
        assert response.status_code == 400, params
        assert error_code(response) == "validation_error"


async def test_deleting_an_endpoint_deletes_its_deliveries(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
) -> None:
    endpoint = await subscribe(tenant, receiver)
    await emit(event(tenant, "call_1"))
    await make_worker().deliver_due()
    await emit(event(tenant, "call_2"))
    await client.delete(f"/v1/webhooks/{endpoint['id']}", headers=tenant.headers)
    assert await make_worker().deliver_due() == []
    async with app.state.sessionmaker() as session:
        for model in (WebhookDelivery, WebhookAttempt):
            assert await session.scalar(select(func.count()).select_from(model)) == 0


async def test_finished_deliveries_are_pruned_after_30_days(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    from outdial.webhooks import deliveries

    endpoint = await subscribe(tenant, receiver)
    receiver.answer = lambda r: 500 if r.event["data"]["call_id"] == "call_pending" else 200
    await emit(event(tenant, "call_done"), event(tenant, "call_pending"))
    worker = make_worker(clock)
    await worker.deliver_due()

    async def prune() -> int:
        async with app.state.sessionmaker() as session, session.begin():
            return await deliveries.prune(session, now=clock())

    clock.advance(days=29)
    assert await prune() == 0
    clock.advance(days=2)
    # The delivered one and both attempts (the log keeps 30 days).
    assert await prune() == 3
    assert await prune() == 0
    [left] = await delivery_log(client, tenant, endpoint["id"])
    assert left["event"]["data"]["call_id"] == "call_pending"  # unfinished: never pruned
    assert left["attempts"] == []
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookAttempt)) == 0


async def test_event_types_are_filtered_per_endpoint(
    tenant, subscribe: Subscribe, emit: Emit, make_worker: MakeWorker
) -> None:
    async with receiving() as campaigns, receiving() as everything:
        await subscribe(tenant, campaigns, events=["campaign.completed", "campaign.started"])
        await subscribe(tenant, everything)
        await emit(
            event(tenant, "cmp_1", type=EventType.CAMPAIGN_STARTED),
            event(tenant, "call_1", type=EventType.CALL_COMPLETED),
            event(tenant, "cmp_1", type=EventType.CAMPAIGN_PAUSED),
            event(tenant, "batch_1", type=EventType.BATCH_COMPLETED),
            event(tenant, "cmp_1", type=EventType.CAMPAIGN_COMPLETED),
        )
        worker = make_worker()
        while await worker.deliver_due():
            pass
        assert [e["type"] for e in campaigns.events] == ["campaign.started", "campaign.completed"]
        assert sorted(e["type"] for e in everything.events) == sorted(
            ["campaign.started", "call.completed", "campaign.paused", "batch.completed",
             "campaign.completed"]
        )  # fmt: skip


@pytest.mark.api_shape  # the wiring only: delivery itself is tested on both backends above
async def test_outdial_serve_delivers(
    database_url: str, tenant, receiver: Receiver, subscribe: Subscribe, emit: Emit
) -> None:
    """`outdial serve` (the app with its dialer) runs a delivery process in itself."""
    await subscribe(tenant, receiver)
    serving = create_app(worker_settings(database_url), with_dialer=True)
    async with LifespanManager(serving):
        await emit(event(tenant, "call_served"))
        [request] = await receiver.wait_for(1)
    assert request.verified and request.event["data"]["call_id"] == "call_served"


async def test_deliveries_and_lag_are_measured(
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    make_worker: MakeWorker,
    clock: Clock,
) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    delivered = sample("outdial_webhook_deliveries_total", result="delivered")
    failed = sample("outdial_webhook_deliveries_total", result="failed")
    await subscribe(tenant, receiver)
    receiver.answer = lambda r: 500 if r.event["data"]["call_id"] == "call_bad" else 200
    await emit(event(tenant, "call_good"), event(tenant, "call_bad"))
    clock.advance(seconds=30)  # sent half a minute after they were due
    worker = make_worker(clock=clock)
    assert len(await worker.deliver_due()) == 2
    assert sample("outdial_webhook_deliveries_total", result="delivered") == delivered + 1
    assert sample("outdial_webhook_deliveries_total", result="failed") == failed + 1
    assert 30 <= sample("outdial_webhook_lag_seconds") < 40
    # Nothing due (the failure's retry is 5 s away): nobody is waiting.
    assert await worker.deliver_due() == []
    assert sample("outdial_webhook_lag_seconds") == 0.0
