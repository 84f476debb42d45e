"""Campaigns dialed by an in-process dialer (simulated carrier, fast), on both backends:
completion by itself, contact statuses and costs, retries, DNC, caps and pacing, windows in
a contact's own zone, pause and resume, and two tenants side by side."""

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from outdial.campaigns import dialing
from outdial.dialer.models import DialAttempt, DialJob
from tests.campaigns.conftest import (
    add_contacts,
    campaign,
    create_campaign,
    fast_settings,
    post,
)
from tests.conftest import create_agent, register_number, simulated_outcome
from tests.dialer.conftest import read_cdr, wait_until
from tests.dialer.test_processes import most_at_once, most_in_any_second

REACHED = {"answered", "voicemail"}


async def run_to_completion(client, tenant, campaign_id: str, within: float = 30) -> dict:
    async def completed() -> bool:
        return (await campaign(client, tenant, campaign_id))["status"] == "completed"

    await wait_until(completed, within=within)
    return await campaign(client, tenant, campaign_id)


async def draft_with_contacts(
    client, make_tenant, numbers: list[str], *, settings: dict[str, Any]
) -> tuple[Any, str]:
    """A tenant (100 calls/s) dialing from +15559990000, and its draft campaign of `numbers`."""
    tenant = await make_tenant(calls_per_second=100)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=settings)
    await add_contacts(client, tenant, campaign_id, numbers)
    return tenant, campaign_id


async def contacts_of(client, tenant, campaign_id: str) -> list[dict[str, Any]]:
    response = await client.get(
        f"/v1/campaigns/{campaign_id}/contacts", params={"limit": 1000}, headers=tenant.headers
    )
    assert response.status_code == 200
    return response.json()["data"]


async def test_a_campaign_runs_to_completed_with_statuses_and_costs(
    client, make_tenant, running_dialer, cdr_path
) -> None:
    tenant = await make_tenant(credits=100, calls_per_second=100)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=0.6)  # 0.3 per 30 s
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    # Every outcome of the simulated carrier: answered, no answer, busy, voicemail, failed.
    numbers = [f"+155566600{d:02d}" for d in (0, 1, 42, 69, 70, 84, 85, 94, 95, 97, 98, 99)]
    await add_contacts(client, tenant, campaign_id, numbers)
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.json()["contacts_dialed"] == len(numbers)

    async with running_dialer():
        detail = await run_to_completion(client, tenant, campaign_id)

    outcomes = {n: simulated_outcome(n) for n in numbers}
    expected = Counter("completed" if o in REACHED else "failed" for o in outcomes.values())
    assert detail["contacts"] == {
        "total": len(numbers),
        "pending": 0,
        "dialed": 0,
        "completed": expected["completed"],
        "failed": expected["failed"],
        "skipped_dnc": 0,
    }
    assert detail["progress"] == 1.0
    assert detail["attempts"] == len(numbers)
    assert detail["answered"] == sum(1 for o in outcomes.values() if o == "answered")
    assert detail["completed_at"] is not None
    for contact in await contacts_of(client, tenant, campaign_id):
        outcome = outcomes[contact["phone_number"]]
        assert contact["end_reason"] == outcome
        assert contact["status"] == ("completed" if outcome in REACHED else "failed")
        assert contact["call_id"].startswith("call_")

    # Each contact's call is a call record, listed by campaign, with its participant's cost.
    listed = await client.get(
        "/v1/calls", params={"campaign_id": campaign_id, "limit": 100}, headers=tenant.headers
    )
    calls = listed.json()["data"]
    assert len(calls) == len(numbers)
    assert all(c["room_name"] == "call_" + c["id"] for c in calls)
    assert {c["status"] for c in calls} == {"completed"}
    assert {c["kind"] for c in calls} == {"campaign"}
    charged = 0.0
    for summary in calls:
        call = (await client.get(f"/v1/calls/{summary['id']}", headers=tenant.headers)).json()
        (p,) = call["participants"]
        assert p["end_reason"] == outcomes[p["identity"]]
        if p["end_reason"] in REACHED:
            increments = math.ceil(p["duration_seconds"] / 30)
            assert p["cost"] == pytest.approx(increments * 0.3)
        else:
            assert p["cost"] == 0
        charged += p["cost"]
    assert charged > 0
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert balance["balance"] == pytest.approx(100 - charged)
    assert balance["held"] == 0
    assert sorted(line["to"] for line in read_cdr(cdr_path)) == sorted(numbers)
    assert {line["from"] for line in read_cdr(cdr_path)} == {"+15559990000"}


async def test_retries_keep_a_contact_dialed_until_its_last_attempt(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    tenant = await make_tenant(calls_per_second=100)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    retry = {"max_attempts": 2, "on": ["busy"], "delay_seconds": 3600}
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(retry=retry)
    )
    await add_contacts(client, tenant, campaign_id, ["+15556660090", "+15556660010"])
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")

    async def first_attempts_done() -> bool:
        counts = (await campaign(client, tenant, campaign_id))["contacts"]
        return counts["completed"] == 1 and counts["dialed"] == 1

    async with running_dialer():
        await wait_until(first_attempts_done)
        detail = await campaign(client, tenant, campaign_id)
        assert detail["status"] == "running"  # the busy one waits an hour for its retry
        busy = [
            c for c in await contacts_of(client, tenant, campaign_id) if c["status"] == "dialed"
        ]
        assert [c["phone_number"] for c in busy] == ["+15556660090"]

        # The retry comes due: its second (last) attempt ends it failed, and the campaign
        # completes by itself.
        async with app.state.sessionmaker() as session, session.begin():
            job = await session.scalar(
                select(DialJob).where(DialJob.tenant_id == tenant.id, DialJob.status == "waiting")
            )
            assert job.attempt == 1
            job.run_at = job.created_at
        detail = await run_to_completion(client, tenant, campaign_id)
    assert detail["attempts"] == 3
    contacts = {c["phone_number"]: c for c in await contacts_of(client, tenant, campaign_id)}
    assert (contacts["+15556660090"]["status"], contacts["+15556660090"]["end_reason"]) == (
        "failed",
        "busy",
    )
    assert Counter(line["to"] for line in read_cdr(cdr_path))["+15556660090"] == 2


async def test_a_number_put_on_the_dnc_list_after_start_is_skipped(
    client, make_tenant, running_dialer, cdr_path
) -> None:
    tenant, campaign_id = await draft_with_contacts(
        client, make_tenant, ["+15556660001", "+15556660002"], settings=fast_settings()
    )
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    await client.post("/v1/dnc", json={"phone_number": "+15556660002"}, headers=tenant.headers)
    async with running_dialer():
        detail = await run_to_completion(client, tenant, campaign_id)
    assert detail["contacts"]["skipped_dnc"] == 1
    assert detail["contacts"]["completed"] == 1
    assert [line["to"] for line in read_cdr(cdr_path)] == ["+15556660001"]


async def test_campaign_concurrency_and_pace_hold_within_the_tenants(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    tenant = await make_tenant(max_concurrency=50, calls_per_second=50)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    settings = fast_settings(max_concurrency=2, calls_per_second=4)
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=settings)
    numbers = [f"+1555666{i:02d}{i % 60:02d}" for i in range(16)]  # all answered
    await add_contacts(client, tenant, campaign_id, numbers)
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    async with running_dialer(simulated_speed=40):
        await run_to_completion(client, tenant, campaign_id, within=60)
    cdr = read_cdr(cdr_path)
    assert sorted(line["to"] for line in cdr) == sorted(numbers)
    async with app.state.sessionmaker() as session:
        ended = {
            a.id: a.ended_at.timestamp() for a in (await session.scalars(select(DialAttempt))).all()
        }
    starts = [datetime.fromisoformat(line["at"]).timestamp() for line in cdr]
    assert most_in_any_second(starts) <= 4
    assert (
        most_at_once([(s, ended[line["attempt_id"]]) for s, line in zip(starts, cdr, strict=True)])
        <= 2
    )


async def test_a_contacts_own_timezone_decides_its_window(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    tenant = await make_tenant(calls_per_second=100)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json={
            "contacts": [
                {"phone_number": "+15556660001"},
                # Twelve hours behind UTC: outside a window open around now in UTC.
                {"phone_number": "+15556660002", "timezone": "Etc/GMT+12"},
            ]
        },
        headers=tenant.headers,
    )
    assert response.json()["inserted_count"] == 2
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")

    async def one_done() -> bool:
        return (await campaign(client, tenant, campaign_id))["contacts"]["completed"] == 1

    async with running_dialer():
        await wait_until(one_done)
        await asyncio.sleep(0.3)
    assert [line["to"] for line in read_cdr(cdr_path)] == ["+15556660001"]
    async with app.state.sessionmaker() as session:
        waiting = (
            await session.scalars(select(DialJob).where(DialJob.tenant_id == tenant.id))
        ).all()
    late = [j for j in waiting if j.to_number == "+15556660002"]
    assert [(j.status, j.attempt) for j in late] == [("waiting", 0)]
    assert (await campaign(client, tenant, campaign_id))["status"] == "running"

    # Ending that contact's call (POST /v1/calls/{id}/end) cancels it: the contact has
    # failed, and with nothing left to dial the campaign completes.
    ended = await client.post(f"/v1/calls/{late[0].call_id}/end", headers=tenant.headers)
    assert ended.status_code == 200, ended.text
    contact = {c["phone_number"]: c for c in await contacts_of(client, tenant, campaign_id)}
    assert (contact["+15556660002"]["status"], contact["+15556660002"]["end_reason"]) == (
        "failed",
        "canceled",
    )
    assert (await campaign(client, tenant, campaign_id))["status"] == "completed"


async def test_pause_stops_new_dials_and_resume_finishes(
    client, make_tenant, running_dialer, cdr_path
) -> None:
    settings = fast_settings(calls_per_second=5)
    numbers = [f"+1555666{i:04d}" for i in range(30)]
    tenant, campaign_id = await draft_with_contacts(client, make_tenant, numbers, settings=settings)
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    async with running_dialer():
        await wait_until(lambda: _cdr_has(cdr_path, 3))
        paused = await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")
        assert paused.json() == {"status": "paused", "id": campaign_id}
        at_pause = len(read_cdr(cdr_path))
        await asyncio.sleep(1.5)
        assert len(read_cdr(cdr_path)) == at_pause < len(numbers)
        assert (await campaign(client, tenant, campaign_id))["status"] == "paused"
        resumed = await post(client, tenant, f"/v1/campaigns/{campaign_id}/resume")
        assert resumed.json() == {"status": "running", "id": campaign_id}
        detail = await run_to_completion(client, tenant, campaign_id)
    assert detail["contacts"]["completed"] + detail["contacts"]["failed"] == len(numbers)
    assert sorted(line["to"] for line in read_cdr(cdr_path)) == sorted(numbers)


async def _cdr_has(path, count: int) -> bool:
    return len(read_cdr(path)) >= count


async def test_two_tenants_campaigns_progress_side_by_side(
    client, make_tenant, running_dialer, cdr_path
) -> None:
    campaigns = []
    for prefix in ("+1555661", "+1555662"):
        tenant = await make_tenant(calls_per_second=100)
        await register_number(client, tenant, prefix + "0000")
        agent = await create_agent(client, tenant)
        settings = fast_settings(calls_per_second=10)
        campaign_id = await create_campaign(
            client, tenant, agent["id"], call_from_number=prefix + "0000", settings=settings
        )
        await add_contacts(client, tenant, campaign_id, [f"{prefix}{i:04d}" for i in range(40)])
        campaigns.append((tenant, campaign_id))
    for tenant, campaign_id in campaigns:
        await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")

    async def both_moving() -> bool:
        dialed = Counter(line["from"] for line in read_cdr(cdr_path))
        if dialed["+15556610000"] < 5 or dialed["+15556620000"] < 5:
            return False
        # Some call of each has ended (on a loaded machine that may come a little later).
        progress = [(await campaign(client, tenant, c))["progress"] for tenant, c in campaigns]
        return all(p > 0 for p in progress)

    async with running_dialer():
        await wait_until(both_moving, within=20)
        for tenant, campaign_id in campaigns:
            progress = (await campaign(client, tenant, campaign_id))["progress"]
            assert progress < 1  # both under way, neither finished first
        for tenant, campaign_id in campaigns:
            await run_to_completion(client, tenant, campaign_id)


def closed_window() -> dict[str, Any]:
    """A window that opens in an hour (in UTC, where the +1555 numbers are judged)."""
    now = datetime.now(UTC)
    return {
        "start": (now + timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=3)).strftime("%H:%M"),
    }


async def test_settings_changed_while_paused_apply_on_resume(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    tenant, campaign_id = await draft_with_contacts(
        client, make_tenant, ["+15556660001", "+15556660002"], settings=fast_settings()
    )
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")
    changed = await client.put(
        f"/v1/campaigns/{campaign_id}",
        json={"settings": {"calling_window": closed_window()}},
        headers=tenant.headers,
    )
    assert changed.status_code == 200, changed.text
    async with running_dialer():
        await asyncio.sleep(0.5)
        assert read_cdr(cdr_path) == []  # paused: nothing claimed
        await post(client, tenant, f"/v1/campaigns/{campaign_id}/resume")

        async def queued_for_the_window() -> bool:
            async with app.state.sessionmaker() as session:
                jobs = (
                    await session.scalars(select(DialJob).where(DialJob.tenant_id == tenant.id))
                ).all()
            return len(jobs) == 2 and all(j.run_at > datetime.now(UTC) for j in jobs)

        await wait_until(queued_for_the_window)
        await asyncio.sleep(0.3)
    # Resumed under the new window: its contacts wait for it to open, none is dialed.
    assert read_cdr(cdr_path) == []
    detail = await campaign(client, tenant, campaign_id)
    assert detail["status"] == "running"
    assert detail["contacts"]["pending"] == 2


async def test_deleting_a_paused_campaign_cancels_its_queued_calls(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    settings = fast_settings(calling_window=closed_window())
    tenant, campaign_id = await draft_with_contacts(
        client, make_tenant, ["+15556660001", "+15556660002"], settings=settings
    )
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")

    async def calls_made() -> list[dict[str, Any]]:
        listed = await client.get(
            "/v1/calls", params={"campaign_id": campaign_id}, headers=tenant.headers
        )
        return listed.json()["data"]

    async with running_dialer():
        await wait_until(lambda: _has(calls_made, 2))
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")).status_code == 200
    deleted = await client.delete(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
    assert deleted.status_code == 204
    calls = await calls_made()
    assert {c["status"] for c in calls} == {"canceled"}
    for summary in calls:
        call = (await client.get(f"/v1/calls/{summary['id']}", headers=tenant.headers)).json()
        assert [(p["status"], p["end_reason"]) for p in call["participants"]] == [
            ("canceled", "canceled")
        ]
    stats = (await client.get("/v1/calls/queue/stats", headers=tenant.headers)).json()
    assert stats["waiting"] == stats["active"] == 0
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert balance["held"] == 0
    assert read_cdr(cdr_path) == []


async def _has(calls_made, count: int) -> bool:
    return len(await calls_made()) >= count


async def test_contacts_waiting_for_their_window_are_queued_only_so_far(
    client, make_tenant, running_dialer, cdr_path, monkeypatch
) -> None:
    monkeypatch.setattr(dialing, "MAX_QUEUED_UNTIL_LATER", 3)
    settings = fast_settings(calling_window=closed_window())
    tenant, campaign_id = await draft_with_contacts(
        client, make_tenant, [f"+155566600{i:02d}" for i in range(10)], settings=settings
    )
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")

    async def calls_made() -> int:
        listed = await client.get(
            "/v1/calls", params={"campaign_id": campaign_id}, headers=tenant.headers
        )
        return len(listed.json()["data"])

    async with running_dialer():
        await wait_until(lambda: _at_least(calls_made, 3))
        await asyncio.sleep(0.5)
        # Three wait for the window; the other seven stay contacts, not calls, meanwhile.
        assert await calls_made() == 3
    assert read_cdr(cdr_path) == []
    assert (await campaign(client, tenant, campaign_id))["contacts"]["pending"] == 10


async def _at_least(count_of, count: int) -> bool:
    return await count_of() >= count
