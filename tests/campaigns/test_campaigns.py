"""Campaign CRUD, settings, contacts (JSON) and the lifecycle's answers and errors, on both
backends, through the real ASGI app."""

import json

import pytest
from sqlalchemy import select

from outdial.calls.models import Call
from outdial.dialer.models import DialJob
from tests.campaigns.conftest import add_contacts, campaign, create_campaign, post
from tests.conftest import create_agent, error_code, register_number

pytestmark = pytest.mark.one_backend

DEFAULT_SETTINGS = {
    "max_concurrency": 10,
    "calls_per_second": 1.0,
    "calling_window": {
        "start": "08:00",
        "end": "21:00",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "timezone": "recipient",
        "fallback_timezone": "UTC",
    },
    "retry": {"max_attempts": 1, "on": ["busy", "no_answer"], "delay_seconds": 3600},
    "ring_timeout_seconds": 30,
    "state_rules": True,
    "max_attempts_per_24h": 3,
}


async def test_the_seeds_requests_answer_the_seeds_shapes(client, tenant, agent) -> None:
    """Seed 001 as written: unprefixed create, the curl upload (form content type, numbers
    without +), start, pause, resume."""
    created = await client.post(
        "/campaigns",
        json={"agent_id": agent["id"], "name": "Renewals", "call_from_number": "+15559990000"},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "created"
    campaign_id = created.json()["campaign_id"]
    assert campaign_id.startswith("cmp_")

    # curl -X POST …/v1/campaigns/cmp_123/contacts -H "Authorization: Bearer …" -d '{…}'
    seed_body = """{
    "contacts": [
      { "phone_number": "15559990001", "variables": { "name": "Alice", "plan": "Gold" } },
      { "phone_number": "15559990002", "variables": { "name": "Bob", "plan": "Silver" } }
    ]
  }"""
    uploaded = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        content=seed_body,
        # What `curl -d` sends, since the seed's curl names no Content-Type.
        headers={**tenant.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["status"] == "success"
    assert uploaded.json()["inserted_count"] == 2

    listed = (await client.get(f"/campaigns/{campaign_id}/contacts", headers=tenant.headers)).json()
    assert [(c["phone_number"], c["variables"], c["status"]) for c in listed["data"]] == [
        ("+15559990001", {"name": "Alice", "plan": "Gold"}, "pending"),
        ("+15559990002", {"name": "Bob", "plan": "Silver"}, "pending"),
    ]

    started = await client.post(f"/campaigns/{campaign_id}/start", headers=tenant.headers)
    assert started.status_code == 200, started.text
    assert started.json() == {
        "message": "Campaign Dispatched Successfully",
        "contacts_dialed": 2,
        "contacts_skipped_dnc": 0,
    }
    paused = await client.post(f"/campaigns/{campaign_id}/pause", headers=tenant.headers)
    assert paused.status_code == 200, paused.text
    assert paused.json() == {"status": "paused", "id": campaign_id}
    resumed = await client.post(f"/campaigns/{campaign_id}/resume", headers=tenant.headers)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json() == {"status": "running", "id": campaign_id}
    for path in (f"/campaigns/{campaign_id}", "/campaigns"):
        response = await client.get(path, headers=tenant.headers)
        assert response.status_code == 200, path


async def test_start_counts_48_dialed_and_2_skipped_as_the_seed_shows(
    client, tenant, agent
) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    numbers = [f"+1555777{i:04d}" for i in range(50)]
    await add_contacts(client, tenant, campaign_id, numbers)
    for blocked in numbers[:2]:
        r = await client.post("/v1/dnc", json={"phone_number": blocked}, headers=tenant.headers)
        assert r.status_code == 201
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.json() == {
        "message": "Campaign Dispatched Successfully",
        "contacts_dialed": 48,
        "contacts_skipped_dnc": 2,
    }
    detail = await campaign(client, tenant, campaign_id)
    assert detail["status"] == "running"
    assert detail["contacts"] == {
        "total": 50,
        "pending": 48,
        "dialed": 0,
        "completed": 0,
        "failed": 0,
        "skipped_dnc": 2,
    }
    assert detail["progress"] == pytest.approx(2 / 50)
    skipped = await client.get(
        f"/v1/campaigns/{campaign_id}/contacts",
        params={"status": "skipped_dnc"},
        headers=tenant.headers,
    )
    assert sorted(c["phone_number"] for c in skipped.json()["data"]) == numbers[:2]


async def test_create_get_list_update_delete(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    detail = await campaign(client, tenant, campaign_id)
    assert detail["status"] == "draft"
    assert detail["settings"] == DEFAULT_SETTINGS
    assert detail["agent_id"] == agent["id"]
    assert detail["call_from_number"] == "+15559990000"
    assert detail["contacts"]["total"] == 0
    assert (detail["attempts"], detail["answered"], detail["progress"]) == (0, 0, 0)

    changed = await client.put(
        f"/v1/campaigns/{campaign_id}",
        json={"name": "Renamed", "settings": {"max_concurrency": 3, "retry": {"max_attempts": 2}}},
        headers=tenant.headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "Renamed"
    assert body["settings"]["max_concurrency"] == 3
    assert body["settings"]["retry"] == {
        "max_attempts": 2,
        "on": ["busy", "no_answer"],
        "delay_seconds": 3600,
    }
    assert body["settings"]["calls_per_second"] == 1.0

    second = await create_campaign(client, tenant, agent["id"], name="Second")
    listed = await client.get("/v1/campaigns", params={"limit": 1}, headers=tenant.headers)
    assert [c["id"] for c in listed.json()["data"]] == [campaign_id]
    cursor = listed.json()["next_cursor"]
    assert cursor
    rest = await client.get("/v1/campaigns", params={"after": cursor}, headers=tenant.headers)
    assert [c["id"] for c in rest.json()["data"]] == [second]
    assert rest.json()["next_cursor"] is None

    deleted = await client.delete(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
    assert gone.status_code == 404
    assert error_code(gone) == "campaign_not_found"
    remaining = await client.get("/v1/campaigns", headers=tenant.headers)
    assert [c["id"] for c in remaining.json()["data"]] == [second]


async def test_settings_given_at_creation_and_validated(client, tenant, agent) -> None:
    settings = {
        "max_concurrency": 2,
        "calls_per_second": 0.5,
        "calling_window": {"start": "09:00", "end": "17:00", "days": ["mon", "fri"]},
        "retry": {"max_attempts": 3, "on": ["busy"], "delay_seconds": 60},
        "ring_timeout_seconds": 15,
    }
    campaign_id = await create_campaign(client, tenant, agent["id"], settings=settings)
    got = (await campaign(client, tenant, campaign_id))["settings"]
    assert got["calling_window"] == {
        "start": "09:00",
        "end": "17:00",
        "days": ["mon", "fri"],
        "timezone": "recipient",
        "fallback_timezone": "UTC",
    }
    assert got["ring_timeout_seconds"] == 15

    base = {"agent_id": agent["id"], "name": "x", "call_from_number": "+15559990000"}
    bad_settings = [
        {"ring_timeout_seconds": 14},
        {"max_concurrency": 0},
        {"calls_per_second": 0},
        {"calling_window": {"start": "8am"}},
        {"calling_window": {"fallback_timezone": "Mars/Olympus"}},
        {"retry": {"on": ["hangup"]}},
        {"unknown": 1},
    ]
    for bad in bad_settings:
        response = await client.post(
            "/v1/campaigns", json={**base, "settings": bad}, headers=tenant.headers
        )
        assert response.status_code == 400, (bad, response.text)
        assert error_code(response) == "validation_error"
        update = await client.put(
            f"/v1/campaigns/{campaign_id}", json={"settings": bad}, headers=tenant.headers
        )
        assert update.status_code == 400, (bad, update.text)
        assert error_code(update) == "validation_error"
    # Nothing changed, nothing was created.
    assert (await campaign(client, tenant, campaign_id))["settings"] == got
    listed = await client.get("/v1/campaigns", headers=tenant.headers)
    assert [c["id"] for c in listed.json()["data"]] == [campaign_id]


async def test_caller_id_and_agent_must_be_the_tenants(client, tenant, agent, make_tenant) -> None:
    other = await make_tenant()
    await register_number(client, other, "+15558880000")
    other_agent = await create_agent(client, other)
    base = {"agent_id": agent["id"], "name": "x", "call_from_number": "+15559990000"}
    not_owned = await client.post(
        "/v1/campaigns",
        json={**base, "call_from_number": "+15558880000"},
        headers=tenant.headers,
    )
    assert not_owned.status_code == 400
    assert error_code(not_owned) == "from_number_not_owned"
    foreign_agent = await client.post(
        "/v1/campaigns", json={**base, "agent_id": other_agent["id"]}, headers=tenant.headers
    )
    assert foreign_agent.status_code == 404
    assert error_code(foreign_agent) == "agent_not_found"
    bad_number = await client.post(
        "/v1/campaigns", json={**base, "call_from_number": "12"}, headers=tenant.headers
    )
    assert bad_number.status_code == 400
    campaign_id = await create_campaign(client, tenant, agent["id"])
    for body, status, code in (
        ({"call_from_number": "+15558880000"}, 400, "from_number_not_owned"),
        ({"agent_id": other_agent["id"]}, 404, "agent_not_found"),
    ):
        response = await client.put(
            f"/v1/campaigns/{campaign_id}", json=body, headers=tenant.headers
        )
        assert response.status_code == status, response.text
        assert error_code(response) == code
    listed = await client.get("/v1/campaigns", headers=tenant.headers)
    assert len(listed.json()["data"]) == 1


async def test_publishable_keys_may_not_touch_campaigns(client, tenant, agent) -> None:
    key = await client.post(
        "/v1/keys",
        json={"type": "publishable", "label": "web", "agent_id": agent["id"]},
        headers=tenant.headers,
    )
    publishable = {"Authorization": f"Bearer {key.json()['key']}"}
    campaign_id = await create_campaign(client, tenant, agent["id"])
    for method, path in (
        ("GET", "/v1/campaigns"),
        ("POST", "/v1/campaigns"),
        ("GET", f"/v1/campaigns/{campaign_id}"),
        ("POST", f"/v1/campaigns/{campaign_id}/start"),
        ("GET", f"/v1/campaigns/{campaign_id}/launch-check"),
        ("GET", f"/campaigns/{campaign_id}/contacts"),
    ):
        response = await client.request(method, path, json={}, headers=publishable)
        assert response.status_code == 403, (path, response.text)
        assert error_code(response) == "publishable_key_forbidden"
    unauthenticated = await client.get("/campaigns")
    assert unauthenticated.status_code == 401


async def test_unknown_campaign_is_404_everywhere(client, tenant) -> None:
    for method, path, body in (
        ("GET", "/v1/campaigns/cmp_nope", None),
        ("PUT", "/v1/campaigns/cmp_nope", {"name": "x"}),
        ("DELETE", "/v1/campaigns/cmp_nope", None),
        ("POST", "/v1/campaigns/cmp_nope/contacts", {"contacts": [{"phone_number": "1555"}]}),
        ("GET", "/v1/campaigns/cmp_nope/contacts", None),
        ("POST", "/v1/campaigns/cmp_nope/start", None),
        ("GET", "/v1/campaigns/cmp_nope/launch-check", None),
        ("POST", "/v1/campaigns/cmp_nope/pause", None),
        ("POST", "/campaigns/cmp_nope/resume", None),
    ):
        response = await client.request(method, path, json=body, headers=tenant.headers)
        assert response.status_code == 404, (path, response.text)
        assert error_code(response) == "campaign_not_found"


async def test_wrong_state_transitions_are_409(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    await add_contacts(client, tenant, campaign_id, ["+15557770001"])

    async def expect_409(action: str, code: str = "invalid_campaign_state") -> None:
        response = await post(client, tenant, f"/v1/campaigns/{campaign_id}/{action}")
        assert response.status_code == 409, (action, response.text)
        assert error_code(response) == code

    await expect_409("pause")  # draft
    await expect_409("resume")
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")).status_code == 200
    await expect_409("start")  # running
    await expect_409("resume")
    running_delete = await client.delete(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
    assert running_delete.status_code == 409
    assert error_code(running_delete) == "campaign_running"
    more = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json={"contacts": [{"phone_number": "+15557770002"}]},
        headers=tenant.headers,
    )
    assert more.status_code == 409
    assert error_code(more) == "invalid_campaign_state"
    assert (await post(client, tenant, f"/v1/campaigns/{campaign_id}/pause")).status_code == 200
    await expect_409("pause")  # paused
    await expect_409("start")
    assert (await campaign(client, tenant, campaign_id))["status"] == "paused"
    # Paused: contacts may be added, and deleting is allowed.
    await add_contacts(client, tenant, campaign_id, ["+15557770002"])
    deleted = await client.delete(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
    assert deleted.status_code == 204


async def test_a_campaign_with_nothing_to_dial_is_not_started(client, tenant, agent) -> None:
    """No pending contact is a launch-check blocker (tests/campaigns/test_launch.py): start
    refuses, and the draft stays as it was."""
    campaign_id = await create_campaign(client, tenant, agent["id"])
    await add_contacts(client, tenant, campaign_id, ["+15557770001"])
    await client.post("/v1/dnc", json={"phone_number": "+15557770001"}, headers=tenant.headers)
    started = await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    assert started.status_code == 409
    assert error_code(started) == "not_ready"
    detail = await campaign(client, tenant, campaign_id)
    assert (detail["status"], detail["contacts"]["pending"]) == ("draft", 1)
    changed = await client.put(
        f"/v1/campaigns/{campaign_id}", json={"name": "x"}, headers=tenant.headers
    )
    assert changed.status_code == 200


async def test_start_is_idempotent_with_a_key(client, tenant, agent, app) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    await add_contacts(client, tenant, campaign_id, ["+15557770001", "+15557770002"])
    headers = {**tenant.headers, "Idempotency-Key": "start-1"}
    first = await client.post(f"/v1/campaigns/{campaign_id}/start", headers=headers)
    again = await client.post(f"/v1/campaigns/{campaign_id}/start", headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    # Starting queues nothing by itself: the dialer makes each contact's call as it goes.
    async with app.state.sessionmaker() as session:
        jobs = (await session.scalars(select(DialJob).where(DialJob.tenant_id == tenant.id))).all()
        calls = (await session.scalars(select(Call).where(Call.tenant_id == tenant.id))).all()
    assert (jobs, calls) == ([], [])


# --- contacts (JSON) -----------------------------------------------------------------------


async def test_json_contacts_invalid_rows_and_duplicates(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    body = {
        "contacts": [
            {"phone_number": "+15557770001", "variables": {"name": "A"}},
            {"phone_number": "15557770002", "timezone": "America/Chicago"},
            {"phone_number": "not a number"},
            {"phone_number": "15557770001"},  # the first, without +
            {"phone_number": "+15557770003", "timezone": "Nowhere/Land"},
        ]
    }
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts", json=body, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["status"] == "success"
    assert result["inserted_count"] == 2
    assert result["duplicate_count"] == 1
    assert result["invalid_count"] == 2
    assert [row["row"] for row in result["invalid"]] == [2, 4]
    assert "phone_number" in result["invalid"][0]["reason"]
    assert "timezone" in result["invalid"][1]["reason"]

    # An earlier upload's numbers count as duplicates too.
    again = await add_contacts(client, tenant, campaign_id, ["+15557770002", "+15557770004"])
    assert (again["inserted_count"], again["duplicate_count"]) == (1, 1)
    listed = await client.get(f"/v1/campaigns/{campaign_id}/contacts", headers=tenant.headers)
    contacts = listed.json()["data"]
    assert [c["phone_number"] for c in contacts] == [
        "+15557770001",
        "+15557770002",
        "+15557770004",
    ]
    assert contacts[1]["timezone"] == "America/Chicago"
    assert all(c["id"].startswith("contact_") for c in contacts)


async def test_json_contacts_refused_whole(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    path = f"/v1/campaigns/{campaign_id}/contacts"
    too_many = {"contacts": [{"phone_number": f"+1555{i:07d}"} for i in range(10_001)]}
    cases = [
        (json.dumps(too_many), "validation_error"),
        ('{"contacts": []}', "validation_error"),
        ('{"contacts": [{"number": "+15557770001"}]}', "validation_error"),
        ('{"contacts": [{"phone_number": "+15557770001", "variables": 3}]}', "validation_error"),
        ("not json", "invalid_body"),
    ]
    for content, code in cases:
        response = await client.post(
            path, content=content, headers={**tenant.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text[:200]
        assert error_code(response) == code
    listed = await client.get(path, headers=tenant.headers)
    assert listed.json()["data"] == []


async def test_contacts_page_and_filter(client, tenant, agent) -> None:
    campaign_id = await create_campaign(client, tenant, agent["id"])
    numbers = [f"+1555777{i:04d}" for i in range(25)]
    await add_contacts(client, tenant, campaign_id, numbers)
    await client.post("/v1/dnc/batch", json={"phone_numbers": numbers[::5]}, headers=tenant.headers)
    await post(client, tenant, f"/v1/campaigns/{campaign_id}/start")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 7, **({"after": cursor} if cursor else {})}
        page = (
            await client.get(
                f"/v1/campaigns/{campaign_id}/contacts", params=params, headers=tenant.headers
            )
        ).json()
        seen += [c["phone_number"] for c in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == numbers
    pending = await client.get(
        f"/v1/campaigns/{campaign_id}/contacts",
        params={"status": "pending", "limit": 1000},
        headers=tenant.headers,
    )
    assert [c["phone_number"] for c in pending.json()["data"]] == [
        n for i, n in enumerate(numbers) if i % 5
    ]
    bad = await client.get(
        f"/v1/campaigns/{campaign_id}/contacts", params={"status": "x"}, headers=tenant.headers
    )
    assert bad.status_code == 400
