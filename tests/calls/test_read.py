"""Reading calls back (GET /v1/calls, GET /v1/calls/{id}), ending them, and the queue stats."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from outdial.billing.service import to_micros
from outdial.calls.models import Call, Participant
from outdial.db import utcnow
from outdial.dialer.models import DialJob
from tests.calls.conftest import balance, count_rows, queue_stats
from tests.conftest import TenantHandle, create_agent, error_code, register_number

pytestmark = pytest.mark.one_backend

SUMMARY_KEYS = {
    "id",
    "room_name",
    "kind",
    "status",
    "agent_id",
    "batch_id",
    "campaign_id",
    "from_number",
    "metadata",
    "variables",
    "post_call",
    "calling_window",
    "retry",
    "ring_timeout_seconds",
    "state_rules",
    "max_attempts_per_24h",
    "created_at",
    "ended_at",
}
CALL_KEYS = SUMMARY_KEYS | {"participant_counts", "participants"}
PARTICIPANT_KEYS = {
    "id",
    "transport",
    "identity",
    "from_number",
    "status",
    "end_reason",
    "attempts",
    "telephony_leg_id",
    "job_id",
    "metadata",
    "duration_seconds",
    "cost",
    "created_at",
    "dialed_at",
    "answered_at",
    "ended_at",
}


async def batch(
    client: httpx.AsyncClient, tenant: TenantHandle, agent: dict[str, Any], numbers: list[str], **kw
) -> dict[str, Any]:
    body = {"agent_id": agent["id"], "to": numbers, **kw}
    response = await client.post("/v1/calls/batch", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    # Ids sort by creation time to the millisecond; keep successive calls apart by at least one.
    await asyncio.sleep(0.002)
    return response.json()


async def direct(
    client: httpx.AsyncClient, tenant: TenantHandle, agent: dict[str, Any], participants: list
) -> dict[str, Any]:
    body = {"agent_id": agent["id"], "participants": participants}
    response = await client.post("/v1/calls", json=body, headers=tenant.headers)
    assert response.status_code in (201, 202), response.text
    await asyncio.sleep(0.002)
    return response.json()


async def list_calls(client: httpx.AsyncClient, tenant: TenantHandle, **params: Any) -> Any:
    response = await client.get("/v1/calls", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "next_cursor"}
    return body


async def get_call(client: httpx.AsyncClient, tenant: TenantHandle, call_id: str) -> Any:
    response = await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def end_call(client: httpx.AsyncClient, tenant: TenantHandle, call_id: str) -> Any:
    response = await client.post(f"/v1/calls/{call_id}/end", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, value
    return moment


# --- GET /v1/calls -----------------------------------------------------------------------


async def test_list_filters(client, tenant, agent, app, make_tenant) -> None:
    a = await batch(client, tenant, agent, ["+15559990001", "+15559990002"], batch_id="promo-a")
    b = await batch(client, tenant, agent, ["+15559990003"], batch_id="promo-b")
    c = await direct(
        client,
        tenant,
        agent,
        [
            {"transport": "pstn", "identity": "+15559990004"},
            {"transport": "webrtc", "identity": "u"},
        ],
    )
    d = await direct(client, tenant, agent, [{"transport": "webrtc", "identity": "u"}])
    await end_call(client, tenant, b["id"])
    async with app.state.sessionmaker() as session, session.begin():
        session.add(
            Call(
                id="call_fromcampaign",
                tenant_id=tenant.id,
                agent_id=agent["id"],
                kind="campaign",
                campaign_id="cmp_one",
                status="queued",
                created_at=utcnow(),
            )
        )

    def ids(body: dict[str, Any]) -> list[str]:
        return [call["id"] for call in body["data"]]

    everything = await list_calls(client, tenant)
    assert ids(everything) == [a["id"], b["id"], c["id"], d["id"], "call_fromcampaign"]
    assert everything["next_cursor"] is None
    for call in everything["data"]:
        assert set(call) == SUMMARY_KEYS
        assert call["room_name"] == "call_" + call["id"]

    assert ids(await list_calls(client, tenant, batch_id="promo-a")) == [a["id"]]
    assert ids(await list_calls(client, tenant, batch_id="promo-b")) == [b["id"]]
    assert ids(await list_calls(client, tenant, batch_id="nope")) == []
    assert ids(await list_calls(client, tenant, campaign_id="cmp_one")) == ["call_fromcampaign"]
    assert ids(await list_calls(client, tenant, campaign_id="cmp_two")) == []
    assert ids(await list_calls(client, tenant, status="canceled")) == [b["id"]]
    assert ids(await list_calls(client, tenant, status="queued")) == [
        a["id"],
        c["id"],
        "call_fromcampaign",
    ]
    assert ids(await list_calls(client, tenant, status="in_progress")) == [d["id"]]
    assert ids(await list_calls(client, tenant, status="completed")) == []
    # Filters combine.
    assert ids(await list_calls(client, tenant, batch_id="promo-b", status="queued")) == []
    assert ids(await list_calls(client, tenant, batch_id="promo-b", status="canceled")) == [b["id"]]
    # Another tenant sees none of them, even by batch id.
    other = await make_tenant()
    assert ids(await list_calls(client, other)) == []
    assert ids(await list_calls(client, other, batch_id="promo-a")) == []


async def test_list_pagination(client, tenant, agent) -> None:
    created = [(await batch(client, tenant, agent, [f"+1555999{i:04d}"]))["id"] for i in range(5)]

    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params = {"limit": 2} if cursor is None else {"limit": 2, "after": cursor}
        page = await list_calls(client, tenant, **params)
        pages += 1
        assert len(page["data"]) <= 2
        seen += [call["id"] for call in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == page["data"][-1]["id"]
    assert pages == 3
    assert seen == created  # each once, oldest first

    exact = await list_calls(client, tenant, limit=5)
    assert [call["id"] for call in exact["data"]] == created
    assert exact["next_cursor"] is None  # no promise of a page that would be empty
    assert len((await list_calls(client, tenant, limit=1000))["data"]) == 5
    assert (await list_calls(client, tenant, after=created[-1]))["data"] == []


@pytest.mark.parametrize(
    "params",
    [{"limit": 1001}, {"limit": 0}, {"limit": "many"}, {"status": "bogus"}, {"status": "failed"}],
)
async def test_list_rejects_bad_parameters(client, tenant, params) -> None:
    response = await client.get("/v1/calls", params=params, headers=tenant.headers)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert [d["loc"] for d in response.json()["error"]["details"]] == [["query", *params]]


# --- GET /v1/calls/{id} ------------------------------------------------------------------


async def test_get_call(client, tenant, app) -> None:
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=1.0)
    # Not in any sorted order, so that request order is the only order that matches.
    numbers = ["+15559990007", "+15559990003", "+15559990009", "+15559990001", "+15559990005"]
    before = datetime.now(UTC)
    queued = await batch(
        client,
        tenant,
        agent,
        numbers,
        metadata={"label": "q1"},
        calling_window={"start": "09:00", "end": "17:00"},
    )
    call = await get_call(client, tenant, queued["id"])

    assert set(call) == CALL_KEYS
    assert call["id"] == queued["id"]
    assert call["room_name"] == queued["room_name"]
    assert call["kind"] == "batch"
    assert call["status"] == "queued"
    assert call["agent_id"] == agent["id"]
    assert call["batch_id"] == queued["batch_id"]
    assert call["campaign_id"] is None
    assert call["metadata"] == {"label": "q1"}
    assert call["calling_window"]["start"] == "09:00"
    assert call["calling_window"]["timezone"] == "recipient"
    assert call["ended_at"] is None
    assert before - timedelta(seconds=1) <= parse_time(call["created_at"]) <= datetime.now(UTC)
    assert call["participant_counts"] == {"queued": 5}

    assert [p["identity"] for p in call["participants"]] == numbers
    assert [p["id"] for p in call["participants"]] == [p["id"] for p in queued["participants"]]
    for p, q in zip(call["participants"], queued["participants"], strict=True):
        assert set(p) == PARTICIPANT_KEYS
        assert p["telephony_leg_id"] == q["telephony_leg_id"]
        assert p["job_id"] == q["job_id"]
        assert p["transport"] == "pstn"
        assert p["from_number"] == "+15559990000"
        assert p["status"] == "queued"
        assert p["end_reason"] is None
        assert p["attempts"] == 0
        assert p["cost"] == 0
        assert p["duration_seconds"] is None
        assert p["dialed_at"] is p["answered_at"] is p["ended_at"] is None
        assert parse_time(p["created_at"]) == parse_time(call["created_at"])

    # What the dialer records shows up as it stored it.
    now = utcnow()
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Participant)
            .where(Participant.id == queued["participants"][2]["id"])
            .values(
                status="completed",
                end_reason="answered",
                attempts=1,
                duration_seconds=61,
                cost_micros=to_micros(1.5),  # three 30-second increments at 1.0/min
                dialed_at=now - timedelta(seconds=70),
                answered_at=now - timedelta(seconds=61),
                ended_at=now,
            )
        )
    call = await get_call(client, tenant, queued["id"])
    assert call["participant_counts"] == {"queued": 4, "completed": 1}
    done = call["participants"][2]
    assert done["identity"] == "+15559990009"
    assert (done["status"], done["end_reason"], done["attempts"]) == ("completed", "answered", 1)
    assert done["duration_seconds"] == 61
    assert done["cost"] == 1.5
    assert parse_time(done["ended_at"]) - parse_time(done["answered_at"]) == timedelta(seconds=61)
    assert parse_time(done["answered_at"]) - parse_time(done["dialed_at"]) == timedelta(seconds=9)


async def test_unknown_or_foreign_call_is_404(client, tenant, agent, make_tenant) -> None:
    response = await client.get("/v1/calls/call_nope", headers=tenant.headers)
    assert response.status_code == 404
    assert error_code(response) == "call_not_found"

    queued = await batch(client, tenant, agent, ["+15559990001"])
    other = await make_tenant()
    for method, path in (("GET", ""), ("POST", "/end")):
        response = await client.request(
            method, f"/v1/calls/{queued['id']}{path}", headers=other.headers
        )
        assert response.status_code == 404, (method, path)
        assert error_code(response) == "call_not_found"
    # The foreign end request touched nothing.
    assert (await get_call(client, tenant, queued["id"]))["participant_counts"] == {"queued": 1}
    assert (await queue_stats(client, tenant))["waiting"] == 1

    response = await client.post("/v1/calls/call_nope/end", headers=tenant.headers)
    assert response.status_code == 404
    assert error_code(response) == "call_not_found"


# --- POST /v1/calls/{id}/end -------------------------------------------------------------


async def test_end_cancels_queued_participants(client, tenant, app) -> None:
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=1.0)  # 0.5 held per recipient
    kept = await batch(client, tenant, agent, ["+15559990011", "+15559990012"])
    ended = await batch(client, tenant, agent, ["+15559990001", "+15559990002", "+15559990003"])
    assert (await queue_stats(client, tenant))["waiting"] == 5
    assert (await balance(client, tenant))["held"] == 2.5

    call = await end_call(client, tenant, ended["id"])
    assert set(call) == CALL_KEYS
    assert call["status"] == "canceled"
    assert call["ended_at"] is not None
    assert call["participant_counts"] == {"canceled": 3}
    for p in call["participants"]:
        assert (p["status"], p["end_reason"]) == ("canceled", "canceled")
        assert p["ended_at"] is not None
        assert p["cost"] == 0
    assert await get_call(client, tenant, ended["id"]) == call

    # Its dial jobs are canceled and its holds released; the other call keeps both.
    assert await queue_stats(client, tenant) == {
        "waiting": 2,
        "active": 0,
        "completed": 0,
        "failed": 0,
    }
    async with app.state.sessionmaker() as session:
        statuses = dict((await session.execute(select(DialJob.id, DialJob.status))).all())
    assert {statuses[p["job_id"]] for p in ended["participants"]} == {"canceled"}
    assert {statuses[p["job_id"]] for p in kept["participants"]} == {"waiting"}
    assert await balance(client, tenant) == {
        "balance": 1000.0,  # canceling charges nothing
        "available": 999.0,
        "held": 1.0,
        "is_active": True,
    }
    assert (await get_call(client, tenant, kept["id"]))["participant_counts"] == {"queued": 2}

    # Ending it again changes nothing: no second release, same ended_at.
    again = await end_call(client, tenant, ended["id"])
    assert again == call
    assert (await balance(client, tenant))["held"] == 1.0
    assert (await queue_stats(client, tenant))["waiting"] == 2

    # Ending the rest brings the holds back to zero.
    await end_call(client, tenant, kept["id"])
    assert await balance(client, tenant) == {
        "balance": 1000.0,
        "available": 1000.0,
        "held": 0.0,
        "is_active": True,
    }
    assert await queue_stats(client, tenant) == {
        "waiting": 0,
        "active": 0,
        "completed": 0,
        "failed": 0,
    }


async def test_end_hangs_up_live_participants_and_cancels_the_rest(client, tenant, app) -> None:
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=1.0)
    queued = await batch(client, tenant, agent, ["+15559990001", "+15559990002", "+15559990003"])
    live = queued["participants"][0]
    async with app.state.sessionmaker() as session, session.begin():  # as the dialer would
        await session.execute(
            update(Participant)
            .where(Participant.id == live["id"])
            .values(status="dialing", attempts=1, dialed_at=utcnow())
        )
        await session.execute(
            update(DialJob).where(DialJob.id == live["job_id"]).values(status="active")
        )

    call = await end_call(client, tenant, queued["id"])
    assert call["participant_counts"] == {"dialing": 1, "canceled": 2}
    assert call["ended_at"] is None  # still live until the hang-up lands
    assert [p["status"] for p in call["participants"]] == ["dialing", "canceled", "canceled"]
    assert await queue_stats(client, tenant) == {
        "waiting": 0,
        "active": 1,
        "completed": 0,
        "failed": 0,
    }
    assert (await balance(client, tenant))["held"] == 0.5  # the live participant's hold stays
    async with app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Participant.id, Participant.hangup_requested_at).where(
                    Participant.call_id == queued["id"]
                )
            )
        ).all()
    asked = {row.id for row in rows if row.hangup_requested_at is not None}
    assert asked == {live["id"]}


async def test_end_a_webrtc_room(client, tenant, agent) -> None:
    room = await direct(client, tenant, agent, [{"transport": "webrtc", "identity": "alice"}])
    held = (await balance(client, tenant))["held"]
    call = await end_call(client, tenant, room["id"])
    assert call["ended_at"] is not None
    assert call["status"] in ("canceled", "completed")
    assert (await balance(client, tenant))["held"] == held
    assert (await end_call(client, tenant, room["id"]))["ended_at"] == call["ended_at"]


# --- GET /v1/calls/queue/stats -----------------------------------------------------------


async def test_queue_stats_count_at_once_and_per_tenant(
    client, tenant, agent, make_tenant, app
) -> None:
    empty = {"waiting": 0, "active": 0, "completed": 0, "failed": 0}
    assert await queue_stats(client, tenant) == empty
    await batch(client, tenant, agent, [f"+1555999{i:04d}" for i in range(7)])
    await direct(
        client,
        tenant,
        agent,
        [
            {"transport": "pstn", "identity": "+15559991001"},
            {"transport": "webrtc", "identity": "w"},
        ],
    )
    # Counted the moment the 202 is answered: nothing is buffered behind it.
    assert await queue_stats(client, tenant) == {**empty, "waiting": 8}
    assert await count_rows(app, DialJob, DialJob.status == "waiting") == 8

    other = await make_tenant()
    assert await queue_stats(client, other) == empty
