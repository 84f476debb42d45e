"""Dialing permissions over the API: GET/PUT /v1/dialing-permissions, and the check that every
call request passes before anything is queued (issue 10, defect 6)."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from outdial.calls.models import Call
from outdial.dialer.models import DialJob
from outdial.errors import NotFound
from outdial.permissions import service
from tests.conftest import TenantHandle, error_code, register_number

# The toll-fraud destinations: an international network, US and UK premium rate.
REVENUE_SHARE = "+8823456789012"
US_PREMIUM = "+19005551234"
UK_PREMIUM = "+449098790123"
UK_LANDLINE = "+442079460123"
DEFAULTS = {
    "countries": [],
    "caller_id_countries": True,
    "allow_premium_rate": False,
    "allow_high_risk": False,
}


async def get_permissions(client: httpx.AsyncClient, tenant: TenantHandle) -> httpx.Response:
    return await client.get("/v1/dialing-permissions", headers=tenant.headers)


async def put_permissions(
    client: httpx.AsyncClient, tenant: TenantHandle, body: Any
) -> httpx.Response:
    return await client.put("/v1/dialing-permissions", json=body, headers=tenant.headers)


async def batch(
    client: httpx.AsyncClient, tenant: TenantHandle, agent: dict[str, Any], to: list[str]
) -> httpx.Response:
    body = {"agent_id": agent["id"], "to": to}
    return await client.post("/v1/calls/batch", json=body, headers=tenant.headers)


async def queued_jobs(app: FastAPI) -> int:
    async with app.state.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(DialJob))


async def test_the_defaults_are_the_caller_ids_countries(client, tenant, agent) -> None:
    response = await get_permissions(client, tenant)
    assert response.status_code == 200, response.text
    assert response.json() == {**DEFAULTS, "effective_countries": ["US"]}  # +1555… is US

    await register_number(client, tenant, "+442079460000")  # a UK caller ID allows the UK
    assert (await get_permissions(client, tenant)).json()["effective_countries"] == ["GB", "US"]
    response = await batch(client, tenant, agent, [UK_LANDLINE, "+15559990001"])
    assert response.status_code == 202, response.text


async def test_a_tenant_without_caller_ids_may_call_nowhere(client, tenant) -> None:
    response = await get_permissions(client, tenant)
    assert response.json()["effective_countries"] == []


async def test_toll_fraud_destinations_are_refused_and_nothing_is_queued(
    client, tenant, agent, app
) -> None:
    """The issue's reproduction: premium and revenue-share numbers among ordinary ones, with a
    secret key. Before the fix this queued them all."""
    to = ["+15559990001", REVENUE_SHARE, US_PREMIUM, UK_PREMIUM, UK_LANDLINE]
    response = await batch(client, tenant, agent, to)
    assert response.status_code == 403, response.text
    assert error_code(response) == "destination_not_permitted"
    refused = response.json()["error"]["details"]["refused"]
    assert [(r["index"], r["number"], r["code"], r["country"]) for r in refused] == [
        (1, REVENUE_SHARE, "high_risk_range", "001"),
        (2, US_PREMIUM, "premium_rate", "US"),
        (3, UK_PREMIUM, "premium_rate", "GB"),
        (4, UK_LANDLINE, "country_not_permitted", "GB"),
    ]
    assert all(r["reason"] for r in refused)
    assert await queued_jobs(app) == 0
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Call)) == 0
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert balance["held"] == 0


async def test_direct_calls_are_checked_too_with_participant_indexes(
    client, tenant, agent, app
) -> None:
    body = {
        "agent_id": agent["id"],
        "participants": [
            {"transport": "webrtc", "identity": "visitor"},
            {"transport": "pstn", "identity": "+15559990001"},
            {"transport": "pstn", "identity": US_PREMIUM},
        ],
    }
    response = await client.post("/v1/calls", json=body, headers=tenant.headers)
    assert response.status_code == 403, response.text
    assert error_code(response) == "destination_not_permitted"
    assert [r["index"] for r in response.json()["error"]["details"]["refused"]] == [2]
    assert await queued_jobs(app) == 0


async def test_each_permission_opens_what_it_names(client, tenant, agent, app) -> None:
    response = await put_permissions(client, tenant, {"allow_premium_rate": True})
    assert response.status_code == 200, response.text
    assert response.json() == {
        **DEFAULTS,
        "allow_premium_rate": True,
        "effective_countries": ["US"],
    }
    assert (await batch(client, tenant, agent, [US_PREMIUM])).status_code == 202
    # The UK's premium numbers need the UK too.
    refused = await batch(client, tenant, agent, [UK_PREMIUM])
    assert refused.json()["error"]["details"]["refused"][0]["code"] == "country_not_permitted"
    await put_permissions(client, tenant, {"countries": ["gb"], "allow_premium_rate": True})
    assert (await batch(client, tenant, agent, [UK_PREMIUM])).status_code == 202

    # +882 needs both the non-geographic "country" and the high-risk ranges.
    await put_permissions(client, tenant, {"countries": ["001"]})
    refused = await batch(client, tenant, agent, [REVENUE_SHARE])
    assert refused.json()["error"]["details"]["refused"][0]["code"] == "high_risk_range"
    await put_permissions(client, tenant, {"allow_high_risk": True})
    refused = await batch(client, tenant, agent, [REVENUE_SHARE])
    assert refused.json()["error"]["details"]["refused"][0]["code"] == "country_not_permitted"
    await put_permissions(client, tenant, {"countries": ["001"], "allow_high_risk": True})
    assert (await batch(client, tenant, agent, [REVENUE_SHARE])).status_code == 202
    assert await queued_jobs(app) == 3


async def test_caller_id_countries_can_be_turned_off(client, tenant, agent) -> None:
    response = await put_permissions(client, tenant, {"caller_id_countries": False})
    assert response.json()["effective_countries"] == []
    refused = await batch(client, tenant, agent, ["+15559990001"])
    assert refused.status_code == 403
    assert error_code(refused) == "destination_not_permitted"
    response = await put_permissions(
        client, tenant, {"caller_id_countries": False, "countries": ["US", "us"]}
    )
    assert response.json()["countries"] == ["US"]
    assert (await batch(client, tenant, agent, ["+15559990001"])).status_code == 202


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        (
            {"countries": ["US", "XX", "gb", "", "EUROPE"]},
            [["countries", 1], ["countries", 3], ["countries", 4]],
        ),
        ({"countries": "US"}, [["countries"]]),
        (
            {"allow_premium_rate": "maybe", "allow_high_risk": None, "caller_id_countries": 0},
            [["caller_id_countries"], ["allow_premium_rate"], ["allow_high_risk"]],
        ),
        ({"countries": ["US"] * 301}, [["countries"]]),
        ({"regions": ["US"]}, [["regions"]]),
        ([], [[]]),
    ],
    ids=["bad-codes", "not-a-list", "not-booleans", "too-many", "unknown-field", "not-an-object"],
)
async def test_bad_updates_are_400_listing_every_field_and_change_nothing(
    client, tenant, agent, body, locs
) -> None:
    await put_permissions(client, tenant, {"countries": ["FR"]})
    response = await put_permissions(client, tenant, body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"
    assert [d["loc"] for d in response.json()["error"]["details"]] == locs
    assert (await get_permissions(client, tenant)).json()["countries"] == ["FR"]


async def test_only_secret_keys_may_read_or_change_them(client, tenant, agent) -> None:
    created = await client.post(
        "/v1/keys",
        json={"type": "publishable", "agent_id": agent["id"]},
        headers=tenant.headers,
    )
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    for method in ("GET", "PUT"):
        response = await client.request(method, "/v1/dialing-permissions", json={}, headers=key)
        assert response.status_code == 403
        assert error_code(response) == "publishable_key_forbidden"
        response = await client.request(method, "/v1/dialing-permissions", json={})
        assert response.status_code == 401


async def test_tenants_do_not_share_permissions(client, tenant, agent, make_tenant) -> None:
    other = await make_tenant()
    await put_permissions(client, other, {"countries": ["GB"], "allow_premium_rate": True})
    assert (await get_permissions(client, tenant)).json() == {
        **DEFAULTS,
        "effective_countries": ["US"],
    }
    assert (await batch(client, tenant, agent, [UK_PREMIUM])).status_code == 403


async def test_refused_destinations_for_the_dialer(client, tenant, agent, app) -> None:
    """What the dialer asks right before dialing: judged on the permissions as they are now."""
    numbers = ["+15559990001", US_PREMIUM, UK_LANDLINE]
    async with app.state.sessionmaker() as session:
        refused = await service.refused_destinations(session, tenant_id=tenant.id, numbers=numbers)
        assert {n: r.code for n, r in refused.items()} == {
            US_PREMIUM: "premium_rate",
            UK_LANDLINE: "country_not_permitted",
        }
        assert await service.refused_destinations(session, tenant_id=tenant.id, numbers=[]) == {}
    await client.delete("/v1/numbers/+15559990000", headers=tenant.headers)
    async with app.state.sessionmaker() as session:
        refused = await service.refused_destinations(session, tenant_id=tenant.id, numbers=numbers)
    assert set(refused) == set(numbers)  # its last caller ID gone, the US is no longer allowed
    async with app.state.sessionmaker() as session:
        with pytest.raises(NotFound):
            await service.refused_destinations(session, tenant_id="ten_gone", numbers=numbers)
