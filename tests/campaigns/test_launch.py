"""GET /v1/campaigns/{id}/launch-check, and start refusing (409 not_ready) while a blocker
that is not merely a matter of time stands; on both backends."""

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, update

from outdial.agents.models import Agent
from outdial.campaigns import launch
from outdial.campaigns import service as campaigns
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.db import utcnow
from outdial.dialer.models import DialJob
from outdial.numbers.models import PhoneNumber
from outdial.tenants.models import Tenant
from tests.campaigns.conftest import add_contacts, campaign, create_campaign, fast_settings, post
from tests.conftest import create_agent, error_code, register_number
from tests.dialer.conftest import wait_until


async def launch_check(client, tenant, campaign_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/campaigns/{campaign_id}/launch-check", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ready", "blockers", "warnings"}
    for finding in body["blockers"] + body["warnings"]:
        assert set(finding) <= {"code", "message", "until"} and finding["message"]
    assert body["ready"] == (not body["blockers"])
    return body


def codes(findings: list[dict[str, Any]]) -> list[str]:
    return [f["code"] for f in findings]


def closed_window(opens_in: timedelta = timedelta(hours=2)) -> dict[str, Any]:
    """A window shut now in UTC (the +1555 numbers' fallback zone), opening in `opens_in`."""
    opens = datetime.now(UTC) + opens_in
    return {
        "start": opens.strftime("%H:%M"),
        "end": (opens + timedelta(hours=1)).strftime("%H:%M"),
    }


def open_12_hours_ahead() -> dict[str, Any]:
    """A window open now 12 hours ahead of UTC (Etc/GMT-12), and shut in UTC."""
    ahead = datetime.now(UTC) + timedelta(hours=12)
    return {
        "start": (ahead - timedelta(hours=1)).strftime("%H:%M"),
        "end": (ahead + timedelta(hours=1)).strftime("%H:%M"),
    }


async def ready_campaign(client, tenant, agent, **settings: Any) -> str:
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(calls_per_second=1, **settings)
    )
    await add_contacts(client, tenant, campaign_id, ["+15557770001", "+15557770002"])
    return campaign_id


async def start_refused(client, tenant, campaign_id: str) -> list[str]:
    """Start answers 409 not_ready, listing the blockers, and changes nothing."""
    before = await campaign(client, tenant, campaign_id)
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.status_code == 409, started.text
    assert error_code(started) == "not_ready"
    blockers = started.json()["error"]["details"]["blockers"]
    assert all(set(b) == {"code", "message"} for b in blockers)
    after = await campaign(client, tenant, campaign_id)
    assert after["status"] == "draft"
    assert after["contacts"] == before["contacts"]
    return codes(blockers)


async def test_a_campaign_ready_to_dial(client, tenant, agent) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    check = await launch_check(client, tenant, campaign_id)
    assert check["ready"] is True
    assert check["blockers"] == []
    # The fixture's agent has no stream_url: answered calls would be held silent.
    assert codes(check["warnings"]) == ["agent_without_stream_url"]
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.status_code == 200
    assert started.json()["contacts_dialed"] == 2
    # Running and ready: still nothing stands in the way.
    assert (await launch_check(client, tenant, campaign_id))["ready"] is True


async def test_no_contacts_blocks_start(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["no_pending_contacts"]
    assert await start_refused(client, tenant, campaign_id) == ["no_pending_contacts"]


async def test_a_refused_start_does_not_use_up_its_idempotency_key(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=fast_settings())
    headers = {**tenant.headers, "Idempotency-Key": "start-once"}
    refused = await client.post(f"/v1/campaigns/{campaign_id}/start", headers=headers)
    assert refused.status_code == 409
    assert error_code(refused) == "not_ready"
    await add_contacts(client, tenant, campaign_id, ["+15557770001"])
    started = await client.post(f"/v1/campaigns/{campaign_id}/start", headers=headers)
    assert started.status_code == 200, started.text
    assert started.json()["contacts_dialed"] == 1
    again = await client.post(f"/v1/campaigns/{campaign_id}/start", headers=headers)
    assert (again.status_code, again.json()) == (200, started.json())


async def test_contacts_all_on_the_dnc_list_are_no_pending_contacts(client, tenant, agent) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    for number in ("+15557770001", "+15557770002"):
        await client.post("/v1/dnc", json={"phone_number": number}, headers=tenant.headers)
    assert codes((await launch_check(client, tenant, campaign_id))["blockers"]) == [
        "no_pending_contacts"
    ]
    assert await start_refused(client, tenant, campaign_id) == ["no_pending_contacts"]
    # Nothing was scrubbed: the contacts are still pending.
    assert (await campaign(client, tenant, campaign_id))["contacts"]["pending"] == 2


async def test_no_credit_blocks_start(client, make_tenant) -> None:
    tenant = await make_tenant(credits=0.04)  # one 30-second increment at 0.1/min is 0.05
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=0.1)
    campaign_id = await ready_campaign(client, tenant, agent)
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["insufficient_credit"]
    assert "0.04" in check["blockers"][0]["message"]
    assert await start_refused(client, tenant, campaign_id) == ["insufficient_credit"]


async def test_a_free_agent_needs_no_credit(client, make_tenant) -> None:
    tenant = await make_tenant(credits=0)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=0)
    campaign_id = await ready_campaign(client, tenant, agent)
    assert (await launch_check(client, tenant, campaign_id))["ready"] is True


async def test_a_caller_id_no_longer_owned_blocks_start(
    client, tenant, agent, make_tenant, app
) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(delete(PhoneNumber).where(PhoneNumber.tenant_id == tenant.id))
    other = await make_tenant()
    await register_number(client, other, "+15559990000")  # now another tenant's number
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["caller_id_not_owned"]
    assert "+15559990000" in check["blockers"][0]["message"]
    assert await start_refused(client, tenant, campaign_id) == ["caller_id_not_owned"]


async def test_a_deleted_agent_blocks_start(client, tenant, agent, app) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Agent).where(Agent.id == agent["id"]).values(deleted_at=utcnow())
        )
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["agent_deleted"]
    assert check["warnings"] == []  # a deleted agent's stream_url is no concern
    assert await start_refused(client, tenant, campaign_id) == ["agent_deleted"]


async def test_a_tenant_that_may_not_dial_blocks_start(client, tenant, agent, app) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Tenant).where(Tenant.id == tenant.id).values(max_concurrency=0, is_active=False)
        )
    expected = ["tenant_inactive", "tenant_concurrency_zero"]
    assert codes((await launch_check(client, tenant, campaign_id))["blockers"]) == expected
    assert await start_refused(client, tenant, campaign_id) == expected


async def test_every_blocker_is_named_at_once(client, make_tenant, app) -> None:
    tenant = await make_tenant(credits=0)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, rate_per_minute=1)
    campaign_id = await create_campaign(client, tenant, agent["id"])
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Agent).where(Agent.id == agent["id"]).values(deleted_at=utcnow())
        )
        await session.execute(delete(PhoneNumber).where(PhoneNumber.tenant_id == tenant.id))
    assert sorted(await start_refused(client, tenant, campaign_id)) == [
        "agent_deleted",
        "caller_id_not_owned",
        "insufficient_credit",
        "no_pending_contacts",
    ]


async def test_a_window_that_opens_later_is_a_matter_of_time(client, tenant, agent) -> None:
    window = closed_window(timedelta(hours=2))
    campaign_id = await ready_campaign(client, tenant, agent, calling_window=window)
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["outside_calling_window"]
    until = datetime.fromisoformat(check["blockers"][0]["until"])
    expected = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2)
    assert abs(until - expected) <= timedelta(minutes=1)
    assert until.strftime("%Y-%m-%d %H:%M UTC") in check["blockers"][0]["message"]
    # Not a reason to refuse: the campaign starts and dials when the window opens.
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.status_code == 200, started.text


async def test_one_contact_inside_its_window_is_enough(client, tenant, agent) -> None:
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(calling_window=open_12_hours_ahead())
    )
    await add_contacts(client, tenant, campaign_id, ["+15557770001"])  # judged in UTC: shut
    assert codes((await launch_check(client, tenant, campaign_id))["blockers"]) == [
        "outside_calling_window"
    ]
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json={"contacts": [{"phone_number": "+15557770002", "timezone": "Etc/GMT-12"}]},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    assert (await launch_check(client, tenant, campaign_id))["blockers"] == []


async def test_a_window_in_a_fixed_zone_wins_over_the_contacts(client, tenant, agent) -> None:
    window = {**open_12_hours_ahead(), "timezone": "Etc/GMT-12"}
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(calling_window=window)
    )
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json={"contacts": [{"phone_number": "+15557770001", "timezone": "UTC"}]},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    assert (await launch_check(client, tenant, campaign_id))["blockers"] == []
    shut = {**closed_window(), "timezone": "UTC"}
    changed = await client.put(
        f"/v1/campaigns/{campaign_id}",
        json={"settings": {"calling_window": shut}},
        headers=tenant.headers,
    )
    assert changed.status_code == 200
    assert codes((await launch_check(client, tenant, campaign_id))["blockers"]) == [
        "outside_calling_window"
    ]


async def test_state_hours_bind_the_launch_check(client, tenant, agent, app) -> None:
    """Florida allows calls 8:00-20:00 only (dialer/state_rules.py): a window open all day is
    shut at 03:00 in Miami until 08:00 there while the campaign keeps state rules on."""
    window = {"start": "00:00", "end": "23:59"}
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(calling_window=window)
    )
    await add_contacts(client, tenant, campaign_id, ["+13055550123"])
    miami = ZoneInfo("America/New_York")
    night = datetime(2026, 12, 1, 3, 0, tzinfo=miami).astimezone(UTC)

    async def blockers() -> list[launch.Finding]:
        async with app.state.sessionmaker() as session:
            found = await campaigns.get_campaign(
                session, tenant_id=tenant.id, campaign_id=campaign_id
            )
            return (await launch.check_launch(session, campaign=found, now=night)).blockers

    [blocker] = await blockers()
    assert blocker.code == "outside_calling_window"
    assert blocker.until == datetime(2026, 12, 1, 8, 0, tzinfo=miami)
    changed = await client.put(
        f"/v1/campaigns/{campaign_id}",
        json={"settings": {"state_rules": False}},
        headers=tenant.headers,
    )
    assert changed.status_code == 200, changed.text
    assert await blockers() == []
    # A window in a fixed zone is judged once for every number, without state rules only.
    fixed = {**window, "timezone": "America/New_York"}
    for state_rules, expected in ((False, []), (True, ["outside_calling_window"])):
        changed = await client.put(
            f"/v1/campaigns/{campaign_id}",
            json={"settings": {"calling_window": fixed, "state_rules": state_rules}},
            headers=tenant.headers,
        )
        assert changed.status_code == 200, changed.text
        assert [b.code for b in await blockers()] == expected


async def test_a_window_that_never_opens_blocks_start(client, tenant, agent) -> None:
    # A toll-free number spans 42 zones from Guam to Newfoundland: an hour's window is never
    # open in all of them at once.
    window = {"start": "08:00", "end": "09:00"}
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(calling_window=window)
    )
    await add_contacts(client, tenant, campaign_id, ["+18002345678"])
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["calling_window_never_opens"]
    assert await start_refused(client, tenant, campaign_id) == ["calling_window_never_opens"]


async def test_the_window_is_judged_within_the_dialers_reach(
    client, tenant, agent, monkeypatch
) -> None:
    """Only the next contacts the dialer would queue are sampled: a contact past them is
    not looked at, whatever its window (see campaigns/launch.py)."""
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(calling_window=open_12_hours_ahead())
    )
    await add_contacts(client, tenant, campaign_id, ["+15557770001", "+15557770002"])
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json={"contacts": [{"phone_number": "+15557770003", "timezone": "Etc/GMT-12"}]},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    monkeypatch.setattr(launch, "FIRST_LOOK", 1)
    monkeypatch.setattr(launch, "WINDOW_SAMPLE_CONTACTS", 2)
    blockers = (await launch_check(client, tenant, campaign_id))["blockers"]
    assert codes(blockers) == ["outside_calling_window"]
    monkeypatch.setattr(launch, "WINDOW_SAMPLE_CONTACTS", 3)
    assert (await launch_check(client, tenant, campaign_id))["blockers"] == []


async def test_paused_and_completed_campaigns(client, tenant, agent, app) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")).status_code == 200
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["campaign_paused"]
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(status="completed")
        )
        await session.execute(
            update(CampaignContact)
            .where(CampaignContact.campaign_id == campaign_id)
            .values(status="completed")
        )
        await session.execute(delete(DialJob).where(DialJob.campaign_id == campaign_id))
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["campaign_completed", "no_pending_contacts"]


async def test_only_retries_left_wait_for_their_delay(
    client, make_tenant, running_dialer, app
) -> None:
    tenant = await make_tenant(calls_per_second=100)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    retry = {"max_attempts": 2, "on": ["busy"], "delay_seconds": 3600}
    campaign_id = await create_campaign(
        client, tenant, agent["id"], settings=fast_settings(retry=retry)
    )
    await add_contacts(client, tenant, campaign_id, ["+15557770085"])  # busy
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200

    async def retry_waiting() -> bool:
        async with app.state.sessionmaker() as session:
            job = await session.scalar(select(DialJob).where(DialJob.campaign_id == campaign_id))
        return job is not None and (job.status, job.attempt) == ("waiting", 1)

    async with running_dialer():
        await wait_until(retry_waiting)
    check = await launch_check(client, tenant, campaign_id)
    assert codes(check["blockers"]) == ["retries_not_due"]
    until = datetime.fromisoformat(check["blockers"][0]["until"])
    assert timedelta(minutes=59) < until - datetime.now(UTC) <= timedelta(hours=1)


async def test_warnings_never_stop_start(client, make_tenant) -> None:
    tenant = await make_tenant(max_concurrency=5, calls_per_second=2)
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant, stream_url="wss://agent.example.com/stream")
    campaign_id = await create_campaign(
        client,
        tenant,
        agent["id"],
        settings=fast_settings(max_concurrency=20, calls_per_second=5),
    )
    await add_contacts(client, tenant, campaign_id, ["+15557770001"])
    check = await launch_check(client, tenant, campaign_id)
    assert check["ready"] is True
    assert codes(check["warnings"]) == [
        "calls_per_second_above_carrier_default",
        "calls_per_second_above_tenant_limit",
        "max_concurrency_above_tenant_limit",
    ]
    assert all("until" not in w for w in check["warnings"])
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200


@pytest.mark.parametrize("rate, warned", [(1, False), (1.5, True)])
async def test_the_carrier_default_rate(client, tenant, agent, rate, warned) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    changed = await client.put(
        f"/v1/campaigns/{campaign_id}",
        json={"settings": {"calls_per_second": rate}},
        headers=tenant.headers,
    )
    assert changed.status_code == 200
    warnings = codes((await launch_check(client, tenant, campaign_id))["warnings"])
    assert ("calls_per_second_above_carrier_default" in warnings) is warned


async def test_another_tenants_or_an_unknown_campaign_is_404(
    client, tenant, agent, make_tenant
) -> None:
    campaign_id = await ready_campaign(client, tenant, agent)
    other = await make_tenant()
    for who, path in (
        (other, f"/v1/campaigns/{campaign_id}/launch-check"),
        (tenant, "/v1/campaigns/cmp_nope/launch-check"),
        (tenant, f"/campaigns/{campaign_id}x/launch-check"),
    ):
        response = await client.get(path, headers=who.headers)
        assert response.status_code == 404, path
        assert error_code(response) == "campaign_not_found"
    # A path that cannot be stored (a NUL) is refused as bad input, with the error JSON.
    nul = await client.get("/v1/campaigns/cmp_%00/launch-check", headers=tenant.headers)
    assert nul.status_code == 400
    error_code(nul)
    unauthenticated = await client.get(f"/v1/campaigns/{campaign_id}/launch-check")
    assert unauthenticated.status_code == 401
    # The seed's unprefixed path answers too.
    assert (
        await client.get(f"/campaigns/{campaign_id}/launch-check", headers=tenant.headers)
    ).json()["ready"] is True
