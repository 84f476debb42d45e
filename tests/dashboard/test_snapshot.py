"""The dashboard's live snapshot on both backends: one statement, one tenant's rows only, and
shared by every viewer of a tenant."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from outdial.dashboard.feed import Feeds, KeyRevoked
from outdial.dashboard.service import load_snapshot
from outdial.keys.service import digest
from tests.conftest import MakeTenant, TenantHandle, create_agent, register_number


async def _campaign(client: httpx.AsyncClient, tenant: TenantHandle, number: str) -> str:
    await register_number(client, tenant, number)
    agent = await create_agent(client, tenant)
    body = {"name": "c", "agent_id": agent["id"], "call_from_number": number}
    campaign_id = (await client.post("/v1/campaigns", json=body, headers=tenant.headers)).json()[
        "campaign_id"
    ]
    contacts = {"contacts": [{"phone_number": f"+1555000{i:04d}"} for i in range(3)]}
    added = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts", json=contacts, headers=tenant.headers
    )
    assert added.status_code == 201
    return campaign_id


@contextmanager
def _statements(app: FastAPI) -> Iterator[list[str]]:
    """The statements sent inside the block."""
    seen: list[str] = []

    def note(*args: Any) -> None:
        seen.append(args[2])

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


async def test_the_snapshot_is_one_statement_of_one_tenant(
    app: FastAPI, client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    mine, theirs = await make_tenant(), await make_tenant()
    campaign_id = await _campaign(client, mine, "+15559990000")
    await _campaign(client, theirs, "+15559990001")
    batch = {"agent_id": (await create_agent(client, mine))["id"], "to": ["+15550001111"]}
    queued = await client.post("/v1/calls/batch", json=batch, headers=mine.headers)
    assert queued.status_code == 202, queued.text
    final: dict[str, dict[str, int]] = {}
    with _statements(app) as statements:
        async with app.state.sessionmaker() as session:
            snapshot = await load_snapshot(
                session, tenant_id=mine.id, final_counts=final, key_digests={digest(mine.key), "x"}
            )
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert [c.id for c in snapshot.campaigns] == [campaign_id]
    assert snapshot.campaigns[0].counts["pending"] == 3 and snapshot.campaigns[0].percent == 0
    assert len(snapshot.calls) == 1 and snapshot.calls[0].status == "queued"
    assert sum(snapshot.queue.values()) == 1
    assert snapshot.live_keys == {digest(mine.key)}


async def test_viewers_of_a_tenant_share_one_snapshot_a_second(
    app: FastAPI, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    renders = 0

    def render(snapshot: Any) -> dict[str, str]:
        nonlocal renders
        renders += 1
        return {"queue": str(sorted(snapshot.queue.items()))}

    feeds = Feeds(app.state.sessionmaker, render, interval=0.2)
    received: list[int] = []

    async def viewer() -> None:
        async for fragments in feeds.watch(tenant.id, digest(tenant.key)):
            if fragments:
                received.append(1)

    loop = asyncio.get_running_loop()
    began = loop.time()
    viewers = [asyncio.create_task(viewer()) for _ in range(20)]
    while feeds.snapshots_read < 4:  # a few intervals, however slow the machine is today
        assert loop.time() - began < 20
        await asyncio.sleep(0.05)
    intervals = (loop.time() - began) / 0.2
    await feeds.close()
    await asyncio.gather(*viewers)
    # About one read per interval for all 20 viewers, not one per viewer per interval.
    assert feeds.snapshots_read <= intervals + 2
    assert renders == feeds.snapshots_read
    assert len(received) == 20  # the queue did not change: each viewer was sent it once


async def test_a_deleted_key_ends_its_stream(
    app: FastAPI, client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    feeds = Feeds(app.state.sessionmaker, lambda s: {"x": "y"}, interval=0.05)
    stream = feeds.watch(tenant.id, digest("sb_secret_deleted"))
    try:
        raised = False
        try:
            async with asyncio.timeout(5):
                async for _ in stream:
                    pass
        except KeyRevoked:
            raised = True
        assert raised
    finally:
        await feeds.close()
