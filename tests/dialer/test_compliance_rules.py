"""State rules in the dialer (API.md, "Dialing rules"): a job outside its state's hours or
over the frequency cap waits, neither failed nor dialed; campaigns have them on by default,
batches ask for them. The simulated carrier's CDR is the ground truth of who was dialed."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from outdial.db import utcnow
from outdial.dialer import claimer
from outdial.dialer.models import DialAttempt, DialJob
from tests.campaigns.conftest import add_contacts, campaign, create_campaign, fast_settings, post
from tests.conftest import TenantHandle
from tests.dialer.conftest import queue_drained, read_cdr, wait_until
from tests.dialer.test_rules import _dialer, get_call, new_tenant, post_batch, rows, stats

FREQUENCY_PERIOD = timedelta(hours=24)


async def start(client: httpx.AsyncClient, tenant: TenantHandle, campaign_id: str) -> None:
    response = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert response.status_code == 200, response.text


async def contacts(client: httpx.AsyncClient, tenant: TenantHandle, campaign_id: str) -> Any:
    response = await client.get(f"/v1/campaigns/{campaign_id}/contacts", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return {c["phone_number"]: c for c in response.json()["data"]}


async def dial_times(app: Any, tenant: TenantHandle, number: str) -> list[datetime]:
    found = await rows(
        app,
        select(DialAttempt.dial_at)
        .where(DialAttempt.tenant_id == tenant.id, DialAttempt.to_number == number)
        .order_by(DialAttempt.dial_at),
    )
    return [at for (at,) in found]


async def job_of(app: Any, participant_id: str) -> Any:
    (job,) = await rows(
        app,
        select(DialJob.status, DialJob.run_at, DialJob.attempt).where(
            DialJob.participant_id == participant_id
        ),
    )
    return job


# --- the frequency cap -----------------------------------------------------------------------


async def test_retries_stop_at_the_cap_and_wait_for_the_first_dial_to_be_a_day_old(
    client, tenant, agent, running_dialer, cdr_path, app
) -> None:
    busy = "+15559990085"
    retry = {"max_attempts": 5, "on": ["busy"], "delay_seconds": 0}
    campaign_id = await create_campaign(
        client,
        tenant,
        agent["id"],
        settings=fast_settings(retry=retry, max_attempts_per_24h=2),
    )
    await add_contacts(client, tenant, campaign_id, [busy])
    await start(client, tenant, campaign_id)

    async def capped() -> bool:
        dials = await dial_times(app, tenant, busy)
        jobs = await rows(app, select(DialJob.status, DialJob.run_at))
        return len(dials) == 2 and [s for s, _ in jobs] == ["waiting"] and jobs[0][1] > utcnow()

    async with running_dialer():
        await wait_until(capped, within=5)
    first, _ = await dial_times(app, tenant, busy)
    assert [line["to"] for line in read_cdr(cdr_path)] == [busy, busy]
    contact = (await contacts(client, tenant, campaign_id))[busy]
    assert contact["status"] == "dialed"
    (status, run_at, attempt) = await job_of(
        app, _participant(await _call(client, tenant, contact))
    )
    assert (status, run_at, attempt) == ("waiting", first + FREQUENCY_PERIOD, 2)
    assert (await campaign(client, tenant, campaign_id))["status"] == "running"


async def test_the_cap_counts_the_tenants_dials_of_a_number_across_campaigns_and_batches(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    number = "+15559990001"
    tenant, agent = await new_tenant(client, make_tenant, "+15559990000")

    async def dialed_once_more(before: int) -> None:
        async def dialed() -> bool:
            done = len(read_cdr(cdr_path)) > before
            return done and await queue_drained(client, tenant.headers)

        async with running_dialer():
            await wait_until(dialed, within=5)
        assert len(read_cdr(cdr_path)) == before + 1

    # 1: a campaign under the cap dials it.
    first_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(max_attempts_per_24h=3)
    )
    await add_contacts(client, tenant, first_id, [number])
    await start(client, tenant, first_id)
    await dialed_once_more(0)
    # 2: a batch that did not ask for state rules is not bound (but its dial counts).
    await post_batch(client, tenant, agent, [number])
    await dialed_once_more(1)
    # 3: a batch asking for them, with a cap of 3: a third dial is allowed.
    third = await post_batch(
        client, tenant, agent, [number], state_rules=True, max_attempts_per_24h=3
    )
    await dialed_once_more(2)
    assert (await get_call(client, tenant, third["id"]))["state_rules"] is True
    # 4: a second campaign, cap 3: the number has had 3 dials today; it waits.
    second_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(max_attempts_per_24h=3)
    )
    await add_contacts(client, tenant, second_id, [number])
    await start(client, tenant, second_id)
    # 5: another tenant's dials of the same number are its own.
    other, other_agent = await new_tenant(client, make_tenant, "+15559990100")
    other_id = await create_campaign(
        client,
        other,
        other_agent["id"],
        call_from_number="+15559990100",
        settings=fast_settings(max_attempts_per_24h=1),
    )
    await add_contacts(client, other, other_id, [number])
    await start(client, other, other_id)

    async def settled() -> bool:
        waiting = (await stats(client, tenant))["waiting"] == 1
        return waiting and (await campaign(client, other, other_id))["status"] == "completed"

    async with running_dialer():
        await wait_until(settled, within=5)
    cdr = read_cdr(cdr_path)
    assert Counter(line["from"] for line in cdr) == {"+15559990000": 3, "+15559990100": 1}
    first_dial = (await dial_times(app, tenant, number))[0]
    contact = (await contacts(client, tenant, second_id))[number]
    assert contact["status"] == "pending"
    status, run_at, attempt = await job_of(app, _participant(await _call(client, tenant, contact)))
    assert (status, run_at, attempt) == ("waiting", first_dial + FREQUENCY_PERIOD, 0)


async def test_state_rules_off_lift_the_cap(
    client, tenant, agent, running_dialer, cdr_path
) -> None:
    busy = "+15559990085"
    retry = {"max_attempts": 3, "on": ["busy"], "delay_seconds": 0}
    campaign_id = await create_campaign(
        client,
        tenant,
        agent["id"],
        settings=fast_settings(retry=retry, max_attempts_per_24h=1, state_rules=False),
    )
    await add_contacts(client, tenant, campaign_id, [busy])
    await start(client, tenant, campaign_id)
    async with running_dialer():
        await wait_until(lambda: _completed(client, tenant, campaign_id), within=5)
    assert [line["to"] for line in read_cdr(cdr_path)] == [busy] * 3


# --- state hours -----------------------------------------------------------------------------


def _zone_where_it_is(hours: range, now: datetime) -> str:
    """A fixed-offset zone in which the clock reads one of `hours` at `now`."""
    for offset in range(-12, 15):
        if (now + timedelta(hours=offset)).hour in hours:
            # POSIX signs: Etc/GMT-5 is five hours ahead of UTC.
            return f"Etc/GMT{-offset:+d}" if offset else "UTC"
    raise AssertionError("no such zone")


async def test_a_campaign_contact_outside_its_states_hours_waits_for_them(
    client, tenant, agent, running_dialer, cdr_path, app
) -> None:
    now = utcnow()
    night = _zone_where_it_is(range(1, 6), now)
    day = _zone_where_it_is(range(10, 17), now)
    # The window is judged in UTC, open now; Florida's hours in the contacts' own zones.
    settings = fast_settings(calling_window={**_open_utc_window(now), "timezone": "UTC"})
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=settings)
    body = {
        "contacts": [
            {"phone_number": "+13055550101", "timezone": night},
            {"phone_number": "+13055550102", "timezone": day},
            {"phone_number": "+15559990003"},
        ]
    }
    added = await post(client, tenant, f"/v1/campaigns/{campaign_id}/contacts", json=body)
    assert added.status_code == 201, added.text
    off_id = await create_campaign(
        client, tenant, agent["id"], settings={**settings, "state_rules": False}
    )
    await post(
        client,
        tenant,
        f"/v1/campaigns/{off_id}/contacts",
        json={"contacts": [{"phone_number": "+13055550111", "timezone": night}]},
    )
    await start(client, tenant, campaign_id)
    await start(client, tenant, off_id)

    async def settled() -> bool:
        return (await stats(client, tenant)) == {
            "waiting": 1,
            "active": 0,
            "completed": 3,
            "failed": 0,
        }

    async with running_dialer():
        await wait_until(settled, within=5)
    assert sorted(line["to"] for line in read_cdr(cdr_path)) == [
        "+13055550102",
        "+13055550111",
        "+15559990003",
    ]
    waiting = (await contacts(client, tenant, campaign_id))["+13055550101"]
    assert waiting["status"] == "pending"
    status, run_at, attempt = await job_of(app, _participant(await _call(client, tenant, waiting)))
    local = run_at.astimezone(ZoneInfo(night))
    assert (status, attempt, local.hour, local.minute) == ("waiting", 0, 8, 0)
    assert run_at - now < timedelta(hours=8)
    call = await _call(client, tenant, waiting)
    assert call["participants"][0]["status"] == "queued"
    # The dial in Florida's hours says so in its checks.
    dialed = (await contacts(client, tenant, campaign_id))["+13055550102"]
    page = await client.get(f"/v1/calls/{dialed['call_id']}/attempts", headers=tenant.headers)
    (attempt_out,) = page.json()["data"]
    rule = attempt_out["checks"]["state_rule"]
    assert (rule["state"], rule["source"]) == ("FL", "Fla. Stat. § 501.616(6)(a)")
    assert rule["hours"] == [
        {
            "start": "08:00",
            "end": "20:00",
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        }
    ]
    (zone,) = rule["zones"]
    assert zone["zone"] == day
    assert 10 <= datetime.fromisoformat(zone["local_time"]).hour <= 16
    assert attempt_out["checks"]["window"]["zones"][0]["zone"] == "UTC"


async def test_a_batch_asking_for_state_rules_waits_for_its_states_hours(
    client, tenant, agent, app, database_url, cdr_path, monkeypatch
) -> None:
    """At 3:30 in Miami (the claim's clock set there) the batch that asked for state rules
    waits for 8:00; the one that did not is dialed."""
    asked = await post_batch(client, tenant, agent, ["+13055550101"], state_rules=True)
    not_asked = await post_batch(client, tenant, agent, ["+13055550102"])
    miami = ZoneInfo("America/New_York")
    local = utcnow().astimezone(miami)
    night = local.replace(hour=3, minute=30, second=0, microsecond=0)
    if night <= local:
        night += timedelta(days=1)
    monkeypatch.setattr(claimer, "utcnow", lambda: night.astimezone(UTC))
    dialer = _dialer(app, database_url, cdr_path)
    try:
        assert await dialer.claim_round() == 2
    finally:
        await dialer.provider.aclose()
    waiting = (await get_call(client, tenant, asked["id"]))["participants"][0]
    assert (waiting["status"], waiting["attempts"], waiting["end_reason"]) == ("queued", 0, None)
    status, run_at, attempt = await job_of(app, waiting["id"])
    assert (status, attempt) == ("waiting", 0)
    assert run_at == night.replace(hour=8, minute=0).astimezone(UTC)
    dialing = (await get_call(client, tenant, not_asked["id"]))["participants"][0]
    assert (dialing["status"], dialing["attempts"]) == ("dialing", 1)


async def test_a_window_closing_before_the_dial_could_be_placed_waits_for_the_next(
    client, tenant, agent, app, database_url, cdr_path, monkeypatch
) -> None:
    """Claimed a second before the window closes, a dial could be placed after it (at its
    pacing slot): it waits for the next opening instead."""
    window = {"start": "08:00", "end": "21:00", "timezone": "America/New_York"}
    closing = await post_batch(client, tenant, agent, ["+15559990001"], calling_window=window)
    new_york = ZoneInfo("America/New_York")
    local = utcnow().astimezone(new_york)
    last_second = local.replace(hour=20, minute=59, second=59, microsecond=0)
    if last_second <= local:
        last_second += timedelta(days=1)
    monkeypatch.setattr(claimer, "utcnow", lambda: last_second.astimezone(UTC))
    dialer = _dialer(app, database_url, cdr_path)
    try:
        assert await dialer.claim_round() == 1
    finally:
        await dialer.provider.aclose()
    (p,) = (await get_call(client, tenant, closing["id"]))["participants"]
    assert (p["status"], p["attempts"]) == ("queued", 0)
    status, run_at, _ = await job_of(app, p["id"])
    next_morning = (last_second + timedelta(days=1)).replace(hour=8, minute=0, second=0)
    assert (status, run_at) == ("waiting", next_morning.astimezone(UTC))


async def test_bad_state_rule_fields_are_a_400_that_queues_nothing(client, tenant, agent) -> None:
    for body, field in (
        ({"max_attempts_per_24h": 2}, "max_attempts_per_24h"),  # without state_rules
        ({"state_rules": True, "max_attempts_per_24h": 0}, "max_attempts_per_24h"),
        ({"state_rules": True, "max_attempts_per_24h": 11}, "max_attempts_per_24h"),
        ({"state_rules": "sometimes"}, "state_rules"),
    ):
        response = await client.post(
            "/v1/calls/batch",
            json={"agent_id": agent["id"], "to": ["+15559990001"], **body},
            headers=tenant.headers,
        )
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["loc"] for d in error["details"]] == [[field]], body
    direct = await client.post(
        "/v1/calls",
        json={
            "agent_id": agent["id"],
            "participants": [{"transport": "pstn", "identity": "+15559990001"}],
            "max_attempts_per_24h": 2,
        },
        headers=tenant.headers,
    )
    assert direct.status_code == 400, direct.text
    assert [d["loc"] for d in direct.json()["error"]["details"]] == [["max_attempts_per_24h"]]
    for settings in ({"state_rules": "maybe"}, {"max_attempts_per_24h": 0}):
        created = await client.post(
            "/v1/campaigns",
            json={
                "agent_id": agent["id"],
                "name": "x",
                "call_from_number": "+15559990000",
                "settings": settings,
            },
            headers=tenant.headers,
        )
        assert created.status_code == 400, (settings, created.text)
    campaign_id = await create_campaign(client, tenant, agent["id"])
    changed = await client.put(
        f"/v1/campaigns/{campaign_id}",
        json={"settings": {"max_attempts_per_24h": 99}},
        headers=tenant.headers,
    )
    assert changed.status_code == 400
    assert changed.json()["error"]["details"][0]["loc"] == ["settings", "max_attempts_per_24h"]
    detail = await campaign(client, tenant, campaign_id)
    assert (detail["settings"]["state_rules"], detail["settings"]["max_attempts_per_24h"]) == (
        True,
        3,
    )
    assert await stats(client, tenant) == {"waiting": 0, "active": 0, "completed": 0, "failed": 0}
    listed = (await client.get("/v1/campaigns", headers=tenant.headers)).json()["data"]
    assert [c["id"] for c in listed] == [campaign_id]


def _open_utc_window(now: datetime) -> dict[str, str]:
    """Open in UTC all day but for the minute two hours before `now`: whatever the contacts'
    zones, the window never hides the state's hours."""
    return {
        "start": (now - timedelta(hours=2)).strftime("%H:%M"),
        "end": (now - timedelta(hours=2, minutes=1)).strftime("%H:%M"),
    }


async def _call(client: httpx.AsyncClient, tenant: TenantHandle, contact: dict[str, Any]) -> Any:
    assert contact["call_id"], contact
    return await get_call(client, tenant, contact["call_id"])


def _participant(call: dict[str, Any]) -> str:
    (p,) = call["participants"]
    return p["id"]


async def _completed(client: httpx.AsyncClient, tenant: TenantHandle, campaign_id: str) -> bool:
    return (await campaign(client, tenant, campaign_id))["status"] == "completed"
