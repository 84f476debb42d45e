"""A caller ID is dialed from only while its tenant owns it, and an agent only while it exists
(API.md, "Dialing rules"): both are checked at dial time, and releasing either while work
uses it answers 409 unless forced. The simulated carrier's CDR is the ground truth of who was
dialed, and from which number."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, update

from outdial.agents.models import Agent
from outdial.db import utcnow
from outdial.dialer.models import DialJob
from outdial.numbers.models import PhoneNumber
from tests.campaigns.conftest import add_contacts, campaign, create_campaign, fast_settings, post
from tests.conftest import TenantHandle, create_agent, error_code, register_number
from tests.dialer.conftest import queue_drained, read_cdr, wait_until
from tests.dialer.test_rules import _closed_window, get_call, held, post_batch, rows, stats

CALLER_ID = "+15559990000"


async def contacts_of(
    client: httpx.AsyncClient, tenant: TenantHandle, campaign_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/campaigns/{campaign_id}/contacts", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def campaign_done(client: httpx.AsyncClient, tenant: TenantHandle, campaign_id: str) -> bool:
    return (await campaign(client, tenant, campaign_id))["status"] == "completed"


# --- defect 1 of issue 13, as the issue tells it ---------------------------------------------


async def test_a_campaign_never_dials_from_a_caller_id_now_registered_by_another_tenant(
    client, make_tenant, running_dialer, cdr_path
) -> None:
    a, b = await make_tenant(), await make_tenant()
    await register_number(client, a, CALLER_ID)
    agent = await create_agent(client, a)
    campaign_id = await create_campaign(client, a, agent["id"], settings=fast_settings())
    await add_contacts(client, a, campaign_id, ["+15559990001"])
    # A draft campaign is no queued work: nothing stops these.
    released = await client.delete(f"/v1/numbers/{CALLER_ID}", headers=a.headers)
    assert released.status_code == 204, released.text
    await register_number(client, b, CALLER_ID)
    deleted = await client.delete(f"/v1/agents/{agent['id']}", headers=a.headers)
    assert deleted.status_code == 204, deleted.text

    started = await post(client, a, f"/v1/campaigns/{campaign_id}/start")
    if started.status_code == 409:  # a launch check may refuse it before any dial
        assert error_code(started) == "not_ready"
        return
    assert started.status_code == 200, started.text
    async with running_dialer():
        await wait_until(lambda: campaign_done(client, a, campaign_id), within=5)
    assert read_cdr(cdr_path) == []
    (contact,) = await contacts_of(client, a, campaign_id)
    assert (contact["status"], contact["end_reason"]) == ("failed", "not_permitted")
    call = await get_call(client, a, contact["call_id"])
    (p,) = call["participants"]
    assert (p["status"], p["end_reason"], p["attempts"], p["cost"]) == (
        "failed",
        "not_permitted",
        0,
        0,
    )
    assert await held(client, a) == 0


# --- the dial-time checks themselves ---------------------------------------------------------


async def test_a_batch_whose_caller_id_was_released_meanwhile_ends_not_permitted(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    """A release that raced the batch's queueing (its check saw no work yet) leaves jobs whose
    caller ID is gone, now another tenant's: the dial-time check must stop them."""
    a, b = await make_tenant(), await make_tenant()
    await register_number(client, a, CALLER_ID)
    await register_number(client, a, "+15559990100")
    agent = await create_agent(client, a)
    queued = await post_batch(
        client,
        a,
        agent,
        [],
        to=None,
        recipients=[
            {"to": "+15559990001"},
            {"to": "+15559990002", "from_number": "+15559990100"},
        ],
        from_number=CALLER_ID,
    )
    await _release_behind_the_apis_back(app, CALLER_ID)
    await register_number(client, b, CALLER_ID)
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, a.headers), within=5)
    assert [(line["to"], line["from"]) for line in read_cdr(cdr_path)] == [
        ("+15559990002", "+15559990100")
    ]
    call = await get_call(client, a, queued["id"])
    by_number = {p["identity"]: p for p in call["participants"]}
    lost = by_number["+15559990001"]
    assert (lost["status"], lost["end_reason"], lost["attempts"]) == ("failed", "not_permitted", 0)
    assert by_number["+15559990002"]["status"] == "completed"
    assert await held(client, a) == 0
    assert await stats(client, a) == {"waiting": 0, "active": 0, "completed": 1, "failed": 1}


async def test_a_batch_whose_agent_was_deleted_meanwhile_ends_not_permitted(
    client, tenant, agent, running_dialer, cdr_path, app
) -> None:
    other = await create_agent(client, tenant)
    doomed = await post_batch(client, tenant, agent, ["+15559990001", "+15559990002"])
    kept = await post_batch(client, tenant, other, ["+15559990003"])
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Agent).where(Agent.id == agent["id"]).values(deleted_at=utcnow())
        )
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers), within=5)
    assert [line["to"] for line in read_cdr(cdr_path)] == ["+15559990003"]
    call = await get_call(client, tenant, doomed["id"])
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("failed", "not_permitted")
    ] * 2
    assert call["status"] == "completed" and call["ended_at"] is not None
    assert (await get_call(client, tenant, kept["id"]))["participants"][0]["status"] == (
        "completed"
    )
    assert await held(client, tenant) == 0


async def _release_behind_the_apis_back(app: FastAPI, number: str) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(delete(PhoneNumber).where(PhoneNumber.phone_number == number))


# --- releasing a caller ID or an agent that work uses ----------------------------------------


async def test_releasing_a_caller_id_that_queued_work_uses_is_a_409_that_changes_nothing(
    client, tenant, agent, running_dialer, cdr_path, app
) -> None:
    window, _ = _closed_window("later_today", utcnow())
    queued = await post_batch(client, tenant, agent, ["+15559990001"], calling_window=window)
    response = await client.delete(f"/v1/numbers/{CALLER_ID}", headers=tenant.headers)
    assert response.status_code == 409, response.text
    assert error_code(response) == "number_in_use"
    assert response.json()["error"]["details"] == {
        "waiting_jobs": 1,
        "live_dials": 0,
        "campaigns": [],
    }
    listed = (await client.get("/v1/numbers", headers=tenant.headers)).json()["data"]
    assert [n["phone_number"] for n in listed] == [CALLER_ID]
    call = await get_call(client, tenant, queued["id"])
    assert call["participants"][0]["status"] == "queued"
    for bad in ("maybe", "2", ""):
        refused = await client.delete(
            f"/v1/numbers/{CALLER_ID}", params={"force": bad}, headers=tenant.headers
        )
        assert refused.status_code == 400, (bad, refused.text)
        assert error_code(refused) == "validation_error"
    assert (await client.get("/v1/numbers", headers=tenant.headers)).json()["data"] == listed


async def test_forcing_the_release_of_a_caller_id_ends_its_work_not_permitted(
    client, tenant, agent, app, cdr_path, running_dialer
) -> None:
    window, _ = _closed_window("later_today", utcnow())
    numbers = ["+15559990001", "+15559990002"]
    waiting = await post_batch(client, tenant, agent, numbers, calling_window=window)
    await register_number(client, tenant, "+15559990100")
    elsewhere = await post_batch(
        client, tenant, agent, ["+15559990003"], calling_window=window, from_number="+15559990100"
    )
    paused_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    await add_contacts(client, tenant, paused_id, ["+15559990011", "+15559990012"])
    assert (await post(client, tenant, f"/v1/campaigns/{paused_id}/start")).status_code == 200
    assert (await post(client, tenant, f"/v1/campaigns/{paused_id}/pause")).status_code == 200
    before = await held(client, tenant)

    refused = await client.delete(f"/v1/numbers/{CALLER_ID}", headers=tenant.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {
        "waiting_jobs": 2,
        "live_dials": 0,
        "campaigns": [paused_id],
    }
    forced = await client.delete(
        f"/v1/numbers/{CALLER_ID}", params={"force": "true"}, headers=tenant.headers
    )
    assert forced.status_code == 204, forced.text
    call = await get_call(client, tenant, waiting["id"])
    assert [(p["status"], p["end_reason"], p["attempts"]) for p in call["participants"]] == [
        ("failed", "not_permitted", 0)
    ] * 2
    assert call["status"] == "completed"
    # Its holds released; the other caller ID's work untouched.
    assert await held(client, tenant) == pytest.approx(before / 3)
    assert (await get_call(client, tenant, elsewhere["id"]))["participants"][0]["status"] == (
        "queued"
    )
    # Paused it stays: a new caller ID (PUT) and new contacts can carry it on.
    detail = await campaign(client, tenant, paused_id)
    assert detail["status"] == "paused"
    assert detail["contacts"]["failed"] == 2
    assert {
        (c["status"], c["end_reason"]) for c in await contacts_of(client, tenant, paused_id)
    } == {("failed", "not_permitted")}
    async with running_dialer():
        await wait_until(lambda: _settled(client, tenant), within=5)
    assert read_cdr(cdr_path) == []
    jobs = await rows(app, select(DialJob.to_number, DialJob.status))
    assert sorted(jobs) == [
        ("+15559990001", "failed"),
        ("+15559990002", "failed"),
        ("+15559990003", "waiting"),
    ]


async def _settled(client: httpx.AsyncClient, tenant: TenantHandle) -> bool:
    return (await stats(client, tenant))["active"] == 0


async def test_deleting_an_agent_that_work_uses_is_a_409_unless_forced(
    client, tenant, agent, app
) -> None:
    window, _ = _closed_window("later_today", utcnow())
    queued = await post_batch(client, tenant, agent, ["+15559990001"], calling_window=window)
    other = await create_agent(client, tenant)
    spared = await post_batch(client, tenant, other, ["+15559990002"], calling_window=window)
    running_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    await add_contacts(client, tenant, running_id, ["+15559990011"])
    assert (await post(client, tenant, f"/v1/campaigns/{running_id}/start")).status_code == 200

    refused = await client.delete(f"/v1/agents/{agent['id']}", headers=tenant.headers)
    assert refused.status_code == 409, refused.text
    assert error_code(refused) == "agent_in_use"
    assert refused.json()["error"]["details"] == {
        "waiting_jobs": 1,
        "live_dials": 0,
        "campaigns": [running_id],
    }
    assert (
        await client.get(f"/v1/agents/{agent['id']}", headers=tenant.headers)
    ).status_code == 200
    bad = await client.delete(
        f"/v1/agents/{agent['id']}", params={"force": "nope"}, headers=tenant.headers
    )
    assert bad.status_code == 400 and error_code(bad) == "validation_error"

    forced = await client.delete(
        f"/v1/agents/{agent['id']}", params={"force": "true"}, headers=tenant.headers
    )
    assert forced.status_code == 204, forced.text
    assert (
        await client.get(f"/v1/agents/{agent['id']}", headers=tenant.headers)
    ).status_code == 404
    call = await get_call(client, tenant, queued["id"])
    assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
        ("failed", "not_permitted")
    ]
    assert (await get_call(client, tenant, spared["id"]))["participants"][0]["status"] == "queued"
    detail = await campaign(client, tenant, running_id)
    assert (detail["status"], detail["contacts"]["failed"]) == ("completed", 1)
    # Nothing left using it: a second delete is an ordinary 404.
    again = await client.delete(f"/v1/agents/{agent['id']}", headers=tenant.headers)
    assert again.status_code == 404


async def test_work_that_ended_does_not_hold_a_release_back(
    client, tenant, agent, running_dialer
) -> None:
    await post_batch(client, tenant, agent, ["+15559990001"])
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers), within=5)
    draft = await create_campaign(client, tenant, agent["id"])
    assert draft
    assert (
        await client.delete(f"/v1/agents/{agent['id']}", headers=tenant.headers)
    ).status_code == 204
    assert (
        await client.delete(f"/v1/numbers/{CALLER_ID}", headers=tenant.headers)
    ).status_code == 204
