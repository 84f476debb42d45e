"""Tenancy: another tenant's id answers 404, never 403, and changes nothing; lists never show
another tenant's rows. The routes are taken from the application's routing table, so a route
added later without a case here makes these tests fail."""

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from outdial.db import utcnow
from outdial.webhooks.outbox import EventType, NewEvent, emit_events
from tests.conftest import TenantHandle, create_agent, error_code, register_number
from tests.routes import PUBLIC, api_routes, fill, path_params

pytestmark = pytest.mark.one_backend


@dataclass
class World:
    """Tenant A with one of everything, and tenant B with its own, separate rows."""

    a: TenantHandle
    b: TenantHandle
    ids: dict[str, str]  # path parameter -> A's id for it
    b_ids: dict[str, str]


@pytest.fixture
async def world(client: httpx.AsyncClient, make_tenant, app) -> World:
    a = await make_tenant()
    b = await make_tenant()
    await register_number(client, a, "+15559990000")
    agent = await create_agent(client, a, name="A's agent")
    # Ones no work uses: releasing those in use is a 409 (tests/dialer/test_ownership.py).
    idle_agent = await create_agent(client, a, name="A's idle agent")
    await register_number(client, a, "+15559990009")
    key = await client.post("/v1/keys", json={"type": "secret", "label": "A"}, headers=a.headers)
    assert key.status_code == 201
    dnc = await client.post("/v1/dnc", json={"phone_number": "+15559990001"}, headers=a.headers)
    assert dnc.status_code == 201
    call = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15559990002", "+15559990003"]},
        headers=a.headers,
    )
    assert call.status_code == 202, call.text

    campaigns = {}
    for state in ("draft", "running", "paused"):
        created = await client.post(
            "/v1/campaigns",
            json={"agent_id": agent["id"], "name": state, "call_from_number": "+15559990000"},
            headers=a.headers,
        )
        assert created.status_code == 201, created.text
        campaign_id = created.json()["campaign_id"]
        contacts = {"contacts": [{"phone_number": "+15559990004"}]}
        await client.post(f"/v1/campaigns/{campaign_id}/contacts", json=contacts, headers=a.headers)
        for action in {"draft": [], "running": ["start"], "paused": ["start", "pause"]}[state]:
            done = await client.post(f"/v1/campaigns/{campaign_id}/{action}", headers=a.headers)
            assert done.status_code == 200, done.text
        campaigns[state] = campaign_id

    webhook = await client.post(
        "/v1/webhooks", json={"url": "https://93.184.215.14/hooks"}, headers=a.headers
    )
    assert webhook.status_code == 201, webhook.text
    async with app.state.sessionmaker() as session, session.begin():
        await emit_events(
            session,
            [
                NewEvent(
                    tenant_id=a.id,
                    type=EventType.CALL_COMPLETED,
                    data={"id": call.json()["id"]},
                    ordering_key=call.json()["id"],
                    occurred_at=utcnow(),
                )
            ],
        )
    webhook_id = webhook.json()["id"]
    deliveries = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=a.headers)
    [delivery] = deliveries.json()["data"]

    await register_number(client, b, "+15559990100")
    b_agent = await create_agent(client, b, name="B's agent")
    b_call = await client.post(
        "/v1/calls/batch",
        json={"agent_id": b_agent["id"], "to": ["+15559990102"]},
        headers=b.headers,
    )
    assert b_call.status_code == 202, b_call.text
    await client.post("/v1/dnc", json={"phone_number": "+15559990101"}, headers=b.headers)
    return World(
        a=a,
        b=b,
        ids={
            "agent_id": agent["id"],
            "idle_agent_id": idle_agent["id"],
            "idle_phone_number": "+15559990009",
            "key_id": key.json()["id"],
            "phone_number": "+15559990000",  # numbers/{e164}; the dnc case overrides it
            "call_id": call.json()["id"],
            "campaign_id": campaigns["draft"],
            "running_campaign_id": campaigns["running"],
            "paused_campaign_id": campaigns["paused"],
            "webhook_id": webhook_id,
            "delivery_id": delivery["id"],
        },
        b_ids={"agent_id": b_agent["id"], "call_id": b_call.json()["id"]},
    )


# Each id-taking route: (the value to use for its path parameter, when it is not the one in
# World.ids; the request body; the error code a foreign id answers).
CASES: dict[tuple[str, str], tuple[dict[str, str], Any, str]] = {
    ("GET", "/v1/agents/{agent_id}"): ({}, None, "agent_not_found"),
    ("PUT", "/v1/agents/{agent_id}"): ({}, {"name": "hijacked"}, "agent_not_found"),
    ("DELETE", "/v1/agents/{agent_id}"): ({"agent_id": "idle_agent_id"}, None, "agent_not_found"),
    ("POST", "/v1/agents/{agent_id}/rotate-secret"): ({}, None, "agent_not_found"),
    ("DELETE", "/v1/keys/{key_id}"): ({}, None, "key_not_found"),
    ("PUT", "/v1/numbers/{phone_number}"): ({}, {"label": "hijacked"}, "number_not_found"),
    ("DELETE", "/v1/numbers/{phone_number}"): (
        {"phone_number": "idle_phone_number"},
        None,
        "number_not_found",
    ),
    ("DELETE", "/v1/dnc/{phone_number}"): (
        {"phone_number": "+15559990001"},
        None,
        "dnc_not_found",
    ),
    ("GET", "/v1/calls/{call_id}"): ({}, None, "call_not_found"),
    ("GET", "/v1/calls/{call_id}/attempts"): ({}, None, "call_not_found"),
    ("POST", "/v1/calls/{call_id}/end"): ({}, None, "call_not_found"),
    ("GET", "/v1/webhooks/{webhook_id}"): ({}, None, "webhook_not_found"),
    ("PUT", "/v1/webhooks/{webhook_id}"): ({}, {"description": "hijacked"}, "webhook_not_found"),
    ("DELETE", "/v1/webhooks/{webhook_id}"): ({}, None, "webhook_not_found"),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): ({}, None, "webhook_not_found"),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): (
        {},
        None,
        "webhook_not_found",
    ),
}
# Campaign routes answer under /v1 and at the seed's unprefixed paths alike.
_CONTACTS = {"contacts": [{"phone_number": "+15559990005"}]}
for _prefix in ("/v1/campaigns", "/campaigns"):
    CASES |= {
        ("GET", _prefix + "/{campaign_id}"): ({}, None, "campaign_not_found"),
        ("PUT", _prefix + "/{campaign_id}"): ({}, {"name": "hijacked"}, "campaign_not_found"),
        ("DELETE", _prefix + "/{campaign_id}"): ({}, None, "campaign_not_found"),
        ("POST", _prefix + "/{campaign_id}/contacts"): ({}, _CONTACTS, "campaign_not_found"),
        ("GET", _prefix + "/{campaign_id}/contacts"): ({}, None, "campaign_not_found"),
        ("POST", _prefix + "/{campaign_id}/start"): ({}, None, "campaign_not_found"),
        ("GET", _prefix + "/{campaign_id}/launch-check"): ({}, None, "campaign_not_found"),
        ("POST", _prefix + "/{campaign_id}/pause"): (
            {"campaign_id": "running_campaign_id"},
            None,
            "campaign_not_found",
        ),
        ("POST", _prefix + "/{campaign_id}/resume"): (
            {"campaign_id": "paused_campaign_id"},
            None,
            "campaign_not_found",
        ),
    }


def id_routes(app) -> set[tuple[str, str]]:
    return {(m, p) for m, p in api_routes(app) if path_params(p)}


async def snapshot(client: httpx.AsyncClient, tenant: TenantHandle, world: World) -> Any:
    """Everything tenant A can see of its own rows."""
    out = {}
    for path in (
        "/v1/agents",
        "/v1/keys",
        "/v1/numbers",
        "/v1/dnc",
        "/v1/calls",
        "/v1/campaigns",
        "/v1/webhooks",
    ):
        response = await client.get(path, params={"limit": 1000}, headers=tenant.headers)
        assert response.status_code == 200
        out[path] = response.json()
    for path in (
        f"/v1/agents/{world.ids['agent_id']}",
        f"/v1/calls/{world.ids['call_id']}",
        f"/v1/campaigns/{world.ids['campaign_id']}",
        f"/v1/campaigns/{world.ids['campaign_id']}/contacts",
        f"/v1/webhooks/{world.ids['webhook_id']}/deliveries",
        "/v1/calls/queue/stats",
        "/v1/billing/balance",
        "/v1/auth/me",
    ):
        response = await client.get(path, headers=tenant.headers)
        assert response.status_code == 200, path
        out[path] = response.json()
    return out


def test_every_id_taking_route_has_a_case(app) -> None:
    routes = id_routes(app)
    assert len(routes) >= len(CASES) - 1  # the walk found the routes at all
    missing = sorted(routes - set(CASES))
    assert not missing, f"routes taking an id without a tenant-isolation case: {missing}"
    stale = sorted(set(CASES) - routes)
    assert not stale, f"cases for routes that no longer exist: {stale}"


@pytest.mark.parametrize(("method", "path"), sorted(CASES), ids=lambda v: str(v))
async def test_foreign_id_is_404_and_changes_nothing(
    client, app, world: World, method: str, path: str
) -> None:
    overrides, body, code = CASES[(method, path)]
    # An override names another of A's ids (campaign cases) or gives the value itself.
    url = fill(path, {**world.ids, **{k: world.ids.get(v, v) for k, v in overrides.items()}})
    before = await snapshot(client, world.a, world)

    response = await client.request(method, url, json=body, headers=world.b.headers)
    assert response.status_code == 404, (url, response.text)
    assert error_code(response) == code

    assert await snapshot(client, world.a, world) == before
    # The same request from A itself reaches A's row (so the 404 above was about tenancy).
    own = await client.request(method, url, json=body, headers=world.a.headers)
    assert own.status_code in (200, 201, 202, 204), (url, own.text)


async def test_foreign_dnc_delete_leaves_the_owners_entry(client, world: World) -> None:
    """B may list the same number; removing B's entry leaves A's."""
    await client.post("/v1/dnc", json={"phone_number": "+15559990001"}, headers=world.b.headers)
    response = await client.delete("/v1/dnc/+15559990001", headers=world.b.headers)
    assert response.status_code == 204
    checked = await client.post(
        "/v1/dnc/check", json={"phone_numbers": ["+15559990001"]}, headers=world.a.headers
    )
    assert checked.json()["results"] == [{"phone_number": "+15559990001", "blocked": True}]


async def test_foreign_ids_in_request_bodies_are_404(client, world: World) -> None:
    agent_id = world.ids["agent_id"]
    attempts = [
        ("/v1/keys", {"type": "publishable", "agent_id": agent_id}),
        ("/v1/calls/batch", {"agent_id": agent_id, "to": ["+15559990104"]}),
        (
            "/v1/calls",
            {
                "agent_id": agent_id,
                "participants": [{"transport": "pstn", "identity": "+15559990104"}],
            },
        ),
    ]
    for path, body in attempts:
        response = await client.post(path, json=body, headers=world.b.headers)
        assert response.status_code == 404, (path, response.text)
        assert error_code(response) == "agent_not_found"


async def test_foreign_caller_id_is_not_usable(client, world: World) -> None:
    b_agent = world.b_ids["agent_id"]
    attempts = [
        ("POST", "/v1/agents", {"name": "x", "default_from_number": "+15559990000"}),
        ("PUT", f"/v1/agents/{b_agent}", {"default_from_number": "+15559990000"}),
        (
            "POST",
            "/v1/calls/batch",
            {"agent_id": b_agent, "to": ["+15559990104"], "from_number": "+15559990000"},
        ),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=world.b.headers)
        assert response.status_code == 400, (path, response.text)
        assert error_code(response) == "from_number_not_owned"


def collection_routes(app) -> list[str]:
    return sorted(
        p for m, p in api_routes(app) if m == "GET" and not path_params(p) and (m, p) not in PUBLIC
    )


async def test_lists_never_show_another_tenants_rows(client, app, world: World) -> None:
    """Every GET route without an id, as B: none of A's identifiers appear; as A: they do."""
    a_markers = {
        world.a.id,
        world.ids["agent_id"],
        world.ids["key_id"],
        world.ids["call_id"],
        world.ids["campaign_id"],
        "+15559990000",
        "+15559990001",
    }
    routes = collection_routes(app)
    assert {"/v1/agents", "/v1/keys", "/v1/numbers", "/v1/dnc", "/v1/calls"} <= set(routes)
    seen_by_a: set[str] = set()
    for path in routes:
        as_b = await client.get(path, params={"limit": 1000}, headers=world.b.headers)
        assert as_b.status_code == 200, (path, as_b.text)
        leaked = {m for m in a_markers if m in as_b.text}
        assert not leaked, f"{path} shows tenant B tenant A's {leaked}"
        as_a = await client.get(path, params={"limit": 1000}, headers=world.a.headers)
        assert as_a.status_code == 200
        seen_by_a |= {m for m in a_markers if m in as_a.text}
    # the check above could fail: A's own views do show every one of those identifiers
    assert seen_by_a == a_markers


async def test_filtered_and_counted_views_are_per_tenant(client, world: World) -> None:
    a_stats = (await client.get("/v1/calls/queue/stats", headers=world.a.headers)).json()
    b_stats = (await client.get("/v1/calls/queue/stats", headers=world.b.headers)).json()
    assert a_stats["waiting"] == 2
    assert b_stats["waiting"] == 1
    a_call = (await client.get(f"/v1/calls/{world.ids['call_id']}", headers=world.a.headers)).json()
    by_batch = await client.get(
        "/v1/calls", params={"batch_id": a_call["batch_id"]}, headers=world.b.headers
    )
    assert by_batch.json() == {"data": [], "next_cursor": None}
    checked = await client.post(
        "/v1/dnc/check", json={"phone_numbers": ["+15559990001"]}, headers=world.b.headers
    )
    assert checked.json()["results"][0]["blocked"] is False


async def test_cursor_from_another_tenant_reveals_nothing(client, world: World) -> None:
    """A cursor is only a position: B paging with A's ids as cursors sees only B's rows."""
    for path, cursor in (
        ("/v1/agents", "00000000-0000-0000-0000-000000000000"),
        ("/v1/calls", "call_" + "0" * 28),
        ("/v1/keys", "key_" + "0" * 28),
        ("/v1/calls", world.ids["call_id"]),
        ("/v1/keys", world.ids["key_id"]),
    ):
        response = await client.get(path, params={"after": cursor}, headers=world.b.headers)
        assert response.status_code == 200
        assert world.ids["agent_id"] not in response.text
        assert world.ids["call_id"] not in response.text
        assert world.ids["key_id"] not in response.text
