"""The events the product writes, end to end: a campaign and a batch dialed by the in-process
dialer (simulated carrier), delivered by a real delivery worker to real receivers that verify
every signature. Exactly one `campaign.completed` per campaign and one `batch.completed` per
batch; every participant's moves; two tenants each see only their own."""

import itertools
from collections import Counter
from typing import Any

import httpx

from outdial.calls.statuses import ParticipantStatus
from outdial.dashboard.service import call_timeline
from tests.campaigns.conftest import add_contacts, create_campaign, fast_settings, post
from tests.conftest import TenantHandle, create_agent, register_number
from tests.dashboard.test_auth import signed_in
from tests.dialer.conftest import RunDialer, cdr_path, running_dialer, wait_until
from tests.webhooks.conftest import MakeWorker, Subscribe
from tests.webhooks.receiver import Receiver, receiving

__all__ = ["cdr_path", "running_dialer"]  # the dialer tests' fixtures, used here too

FINAL = {ParticipantStatus.COMPLETED, ParticipantStatus.FAILED, ParticipantStatus.CANCELED}


def of_type(receiver: Receiver, kind: str) -> list[dict[str, Any]]:
    return [e for e in receiver.events if e["type"] == kind]


async def delivered_all(worker: Any) -> None:
    """Send what is due until nothing is left (the dialer may still be writing events)."""
    while await worker.deliver_due():
        pass


async def run_campaign(client: httpx.AsyncClient, tenant: TenantHandle, numbers: list[str]) -> str:
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    await add_contacts(client, tenant, campaign_id, numbers)
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.status_code == 200, started.text
    return campaign_id


async def send_batch(client: httpx.AsyncClient, tenant: TenantHandle, numbers: list[str]) -> str:
    await register_number(client, tenant, "+15559990001")
    agent = await create_agent(client, tenant)
    response = await post(
        client,
        tenant,
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "from_number": "+15559990001", "to": numbers},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def test_a_campaign_and_a_batch_send_each_event_once_to_their_own_tenant(
    client: httpx.AsyncClient,
    make_tenant,
    subscribe: Subscribe,
    make_worker: MakeWorker,
    running_dialer: RunDialer,
) -> None:
    dialing = await make_tenant(calls_per_second=100)
    batching = await make_tenant(calls_per_second=100)
    campaign_numbers = [f"+15556660{i:03d}" for i in (0, 1, 42, 70, 85, 95, 98)]
    batch_numbers = [f"+15557770{i:03d}" for i in (3, 71, 86, 99)]
    async with receiving() as campaign_hooks, receiving() as batch_hooks:
        await subscribe(dialing, campaign_hooks)
        await subscribe(batching, batch_hooks)
        campaign_id = await run_campaign(client, dialing, campaign_numbers)
        batch_call_id = await send_batch(client, batching, batch_numbers)
        worker = make_worker()

        async def everything_delivered() -> bool:
            await delivered_all(worker)
            return bool(of_type(campaign_hooks, "campaign.completed")) and bool(
                of_type(batch_hooks, "batch.completed")
            )

        async with running_dialer():
            await wait_until(everything_delivered, within=60)
        await delivered_all(worker)  # anything written after the last look

        assert all(r.verified for r in campaign_hooks.received + batch_hooks.received)
        # Retries reuse an event's id; none happened here, so every id is new.
        for hooks in (campaign_hooks, batch_hooks):
            assert len(set(hooks.ids())) == len(hooks.received)

        # The campaign: started, then completed once, as GET /v1/campaigns/{id} shows it.
        kinds = Counter(e["type"] for e in campaign_hooks.events)
        assert kinds["campaign.started"] == 1
        assert kinds["campaign.completed"] == 1
        assert kinds["batch.completed"] == 0
        [completed] = of_type(campaign_hooks, "campaign.completed")
        assert completed["data"]["id"] == campaign_id
        assert completed["data"]["status"] == "completed"
        assert completed["data"]["contacts"]["pending"] == 0

        # The batch: one batch.completed after its last participant ended, with all final.
        kinds = Counter(e["type"] for e in batch_hooks.events)
        assert kinds["batch.completed"] == 1
        assert not any(k.startswith("campaign.") for k in kinds)
        [batch] = of_type(batch_hooks, "batch.completed")
        assert batch["data"]["id"] == batch_call_id
        assert {p["status"] for p in batch["data"]["participants"]} <= FINAL
        assert "post_call" in batch["data"]
        last_update = max(
            i for i, e in enumerate(batch_hooks.events) if e["type"] == "call.participant.updated"
        )
        assert batch_hooks.events.index(batch) > last_update

        # Every participant's moves arrive, ending in its final status; each tenant sees
        # only its own numbers.
        for hooks, numbers in ((campaign_hooks, campaign_numbers), (batch_hooks, batch_numbers)):
            updates = of_type(hooks, "call.participant.updated")
            by_number: dict[str, list[str]] = {}
            for update in updates:
                assert update["data"]["call_id"].startswith("call_")
                by_number.setdefault(update["data"]["identity"], []).append(
                    update["data"]["status"]
                )
            assert set(by_number) == set(numbers)
            for statuses in by_number.values():
                assert statuses[0] == "dialing"
                assert statuses[-1] in FINAL
                # No move reported twice (a dial handed back under load may be dialed again:
                # dialing, queued, dialing is two moves, not a repeat).
                assert all(a != b for a, b in itertools.pairwise(statuses))


async def test_pause_and_resume_are_each_one_event(
    client: httpx.AsyncClient,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    make_worker: MakeWorker,
) -> None:
    await subscribe(tenant, receiver, events=["campaign.paused", "campaign.resumed"])
    campaign_id = await run_campaign(client, tenant, ["+15556660001"])
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")).status_code == 200
    refused = await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")
    assert refused.status_code == 409  # a refused transition writes no event
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/resume")).status_code == 200
    await delivered_all(make_worker())
    # Only the types the endpoint asked for; started is filtered out.
    assert [e["type"] for e in receiver.events] == ["campaign.paused", "campaign.resumed"]
    assert [e["data"]["status"] for e in receiver.events] == ["paused", "running"]


async def test_a_calls_timeline_shows_its_webhook_deliveries(
    app,
    client: httpx.AsyncClient,
    tenant,
    make_tenant,
    subscribe: Subscribe,
    make_worker: MakeWorker,
    running_dialer: RunDialer,
) -> None:
    other = await make_tenant()
    async with receiving() as mine, receiving() as theirs:
        await subscribe(tenant, mine)
        await subscribe(other, theirs)
        call_id = await send_batch(client, tenant, ["+15557770001"])
        worker = make_worker()

        async def batch_delivered() -> bool:
            await delivered_all(worker)
            return bool(of_type(mine, "batch.completed"))

        async with running_dialer():
            await wait_until(batch_delivered, within=30)

    async with app.state.sessionmaker() as session:
        timeline = await call_timeline(session, tenant_id=tenant.id, call_id=call_id)
    deliveries = [e for e in timeline.entries if e.kind == "delivery"]
    titles = [e.title for e in deliveries]
    assert "webhook batch.completed: delivered after 1 attempt" in titles
    assert "webhook call.participant.updated: delivered after 1 attempt" in titles
    assert all(e.detail == mine.url for e in deliveries)
    assert len(deliveries) == len(mine.received)
    # Shown in time order with the rest: the batch's delivery comes after the call ended.
    assert timeline.entries == sorted(timeline.entries, key=lambda e: e.at)
    async with signed_in(app, tenant) as dashboard:
        page = await dashboard.get(f"/dashboard/calls/{call_id}")
    assert page.status_code == 200, page.text
    assert "webhook batch.completed: delivered after 1 attempt" in page.text
