"""emit_events: the outbox is written in the caller's transaction, for the endpoints that
want the event, with one query and one bulk insert."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, update

from outdial.calls.models import Participant
from outdial.calls.statuses import EndReason, ParticipantStatus
from outdial.dialer.sources import ParticipantChange
from outdial.dialer.status import change_participants
from outdial.webhooks.models import WebhookDelivery
from outdial.webhooks.outbox import EventType, emit_events
from tests.conftest import create_agent, register_number
from tests.webhooks.conftest import Emit, MakeWorker, Subscribe, create_webhook
from tests.webhooks.conftest import event as new_event
from tests.webhooks.receiver import Receiver


async def deliveries(app: FastAPI) -> list[WebhookDelivery]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.seq)))


@contextmanager
def statements_run(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements SQLAlchemy sends while the `with` block runs (BEGINs left out)."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if not statement.upper().startswith("BEGIN"):
            seen.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_one_row_per_subscribed_enabled_endpoint(
    app: FastAPI, client: httpx.AsyncClient, tenant, make_tenant, allow_private, emit: Emit
) -> None:
    other = await make_tenant()
    everything = await create_webhook(client, tenant, "http://127.0.0.1:9/all")
    completed_only = await create_webhook(
        client, tenant, "http://127.0.0.1:9/done", events=["call.completed"]
    )
    disabled = await create_webhook(client, tenant, "http://127.0.0.1:9/off")
    await client.put(
        f"/v1/webhooks/{disabled['id']}", json={"status": "disabled"}, headers=tenant.headers
    )
    others = await create_webhook(client, other, "http://127.0.0.1:9/other")

    updated = new_event(tenant, "call_a", status="dialing")
    completed = new_event(tenant, "call_a", type=EventType.CALL_COMPLETED, status="completed")
    await emit(updated, completed)

    rows = await deliveries(app)
    # In the order emitted; one event's endpoints in any order.
    assert (rows[0].endpoint_id, rows[0].event_type) == (everything["id"], updated.type)
    assert {(r.endpoint_id, r.event_type) for r in rows[1:]} == {
        (everything["id"], "call.completed"),
        (completed_only["id"], "call.completed"),
    }
    assert len(rows) == 3
    assert others["id"] not in {r.endpoint_id for r in rows}
    # One event, one id and one body, whichever endpoint it goes to.
    assert rows[1].event_id == rows[2].event_id != rows[0].event_id
    assert rows[1].payload == rows[2].payload
    body = json.loads(rows[0].payload)
    assert body == {
        "type": "call.participant.updated",
        "timestamp": updated.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": {"call_id": "call_a", "status": "dialing"},
    }
    assert all(
        r.status == "pending" and r.attempts == 0 and r.ordering_key == "call_a" for r in rows
    )
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)


async def test_a_tenant_without_endpoints_costs_one_query(app: FastAPI, tenant) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        with statements_run(app) as emitted:
            await emit_events(session, [new_event(tenant, f"call_{i}") for i in range(100)])
            await emit_events(session, [])
    assert len(emitted) == 1 and emitted[0].lstrip().upper().startswith("SELECT"), emitted
    assert await deliveries(app) == []


async def test_many_events_are_one_select_and_one_bulk_insert(
    app: FastAPI, client: httpx.AsyncClient, tenant, make_tenant, allow_private
) -> None:
    other = await make_tenant()
    await create_webhook(client, tenant, "http://127.0.0.1:9/a")
    await create_webhook(client, other, "http://127.0.0.1:9/b")
    events = [new_event(t, f"call_{i}") for i in range(250) for t in (tenant, other)]
    async with app.state.sessionmaker() as session, session.begin():
        with statements_run(app) as emitted:
            await emit_events(session, events)
    # The insert goes through the driver's bulk path (COPY / executemany), below SQLAlchemy.
    assert len(emitted) == 1, emitted
    assert len(await deliveries(app)) == 500


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_sent_only_if_the_transaction_commits(
    app: FastAPI,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    make_worker: MakeWorker,
    outcome: str,
) -> None:
    await subscribe(tenant, receiver)
    async with app.state.sessionmaker() as session:
        await session.begin()
        await emit_events(session, [new_event(tenant, "call_tx", marker=outcome)])
        if outcome == "commit":
            await session.commit()
        else:
            await session.rollback()
    sent = await make_worker().deliver_due()
    if outcome == "commit":
        assert len(sent) == 1
        assert [e["data"]["marker"] for e in receiver.events] == ["commit"]
    else:
        assert sent == []
        assert receiver.received == []
        assert await deliveries(app) == []


async def test_a_participant_event_carries_what_get_answers(
    app: FastAPI, client: httpx.AsyncClient, tenant, allow_private
) -> None:
    """The event's `data` is rendered from the participant's columns, not through the API's
    model: it must still be what `GET /v1/calls/{id}` answers, field for field, for values
    that serialise in more than one way (microseconds, a fractional cost, non-ASCII and
    nested metadata, nulls)."""
    await create_webhook(client, tenant, "http://127.0.0.1:9/all")
    await register_number(client, tenant, "+15559990002")
    agent = await create_agent(client, tenant)
    metadata = {"name": "Zoë Ångström", "score": 0.1, "tags": ["a", "é"], "nested": {"n": None}}
    queued = await client.post(
        "/v1/calls/batch",
        json={
            "agent_id": agent["id"],
            "from_number": "+15559990002",
            "recipients": [{"to": "+15557770001", "metadata": metadata}],
        },
        headers=tenant.headers,
    )
    assert queued.status_code == 202, queued.text
    call_id = queued.json()["id"]
    async with app.state.sessionmaker() as session, session.begin():
        participant_id = await session.scalar(
            select(Participant.id).where(Participant.call_id == call_id)
        )
        dialed = datetime(2026, 11, 30, 12, 0, 1, 120000, tzinfo=UTC)
        await session.execute(
            update(Participant)
            .where(Participant.id == participant_id)
            .values(dialed_at=dialed, attempts=1, telephony_leg_id="leg_1", cost_micros=12_345)
        )
        await change_participants(
            session,
            changes=[
                ParticipantChange(
                    participant_id=participant_id,
                    tenant_id=tenant.id,
                    status=ParticipantStatus.COMPLETED,
                    at=datetime(2026, 11, 30, 12, 0, 9, 123456, tzinfo=UTC),
                    end_reason=EndReason.ANSWERED,
                    answered_at=datetime(2026, 11, 30, 12, 0, 2, tzinfo=UTC),
                    duration_seconds=7,
                    cost_micros=1,
                )
            ],
        )
    [row] = [r for r in await deliveries(app) if r.event_type == "call.participant.updated"]
    sent = json.loads(row.payload)["data"]
    shown = (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()
    [participant] = shown["participants"]
    assert sent == {**participant, "call_id": call_id}
    assert list(sent) == [*participant, "call_id"]  # the same fields in the same order
    assert sent["cost"] == 0.012346 and sent["metadata"] == metadata
