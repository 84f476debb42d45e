"""Signing in to the dashboard, its CSRF guard, and tenants kept apart (in-process; these
are about the HTTP surface, so they run on SQLite only)."""

import httpx
import pytest
from fastapi import FastAPI

from outdial.dashboard.routes import COOKIE, csrf_token
from tests.conftest import MakeTenant, TenantHandle, create_agent, register_number

pytestmark = pytest.mark.one_backend


def signed_in(app: FastAPI, tenant: TenantHandle) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://outdial.test",
        cookies={COOKIE: tenant.key},
    )


async def _running_campaign(client: httpx.AsyncClient, tenant: TenantHandle) -> str:
    await register_number(client, tenant, "+15559990000")
    agent = await create_agent(client, tenant)
    body = {"name": "c", "agent_id": agent["id"], "call_from_number": "+15559990000"}
    created = await client.post("/v1/campaigns", json=body, headers=tenant.headers)
    campaign_id = created.json()["campaign_id"]
    contacts = {"contacts": [{"phone_number": "+15550001234"}]}
    await client.post(
        f"/v1/campaigns/{campaign_id}/contacts", json=contacts, headers=tenant.headers
    )
    return campaign_id


async def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_other_keys(
    client: httpx.AsyncClient, tenant: TenantHandle, agent: dict
) -> None:
    response = await client.post("/dashboard/login", data={"key": tenant.key})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    client.cookies.clear()
    wrong = await client.post("/dashboard/login", data={"key": "sb_secret_nope"})
    assert wrong.status_code == 401 and "Unknown API key." in wrong.text
    assert "set-cookie" not in wrong.headers
    publishable = await client.post(
        "/v1/keys",
        json={"type": "publishable", "label": "web", "agent_id": agent["id"]},
        headers=tenant.headers,
    )
    assert publishable.status_code == 201, publishable.text
    refused = await client.post("/dashboard/login", data={"key": publishable.json()["key"]})
    assert refused.status_code == 401 and "secret key" in refused.text
    assert (await client.get("/dashboard")).headers["location"] == "/dashboard/login"
    assert (await client.get("/dashboard/events")).status_code == 204  # EventSource stops


async def test_actions_need_the_csrf_token_and_a_same_origin(
    app: FastAPI, client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    campaign_id = await _running_campaign(client, tenant)
    url = f"/dashboard/campaigns/{campaign_id}/start"
    async with signed_in(app, tenant) as page:
        assert (await page.post(url)).status_code == 403
        forged = {"X-CSRF-Token": csrf_token(tenant.key), "Origin": "https://evil.example"}
        assert (await page.post(url, headers=forged)).status_code == 403
        detail = await client.get(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
        assert detail.json()["status"] == "draft"  # nothing happened
        good = await page.post(
            url, headers={"X-CSRF-Token": csrf_token(tenant.key), "Origin": "http://outdial.test"}
        )
        assert good.status_code == 200 and "started" in good.text
        detail = await client.get(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
        assert detail.json()["status"] == "running"
        unknown = await page.post(
            f"/dashboard/campaigns/{campaign_id}/delete",
            headers={"X-CSRF-Token": csrf_token(tenant.key)},
        )
        assert unknown.status_code == 404


async def test_another_tenants_campaigns_and_calls_are_not_found(
    app: FastAPI, client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    owner, other = await make_tenant(), await make_tenant()
    campaign_id = await _running_campaign(client, owner)
    agent = await create_agent(client, owner)
    batch = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15550001111"]},
        headers=owner.headers,
    )
    call_id = batch.json()["id"]
    async with signed_in(app, other) as page:
        headers = {"X-CSRF-Token": csrf_token(other.key)}
        start = await page.post(f"/dashboard/campaigns/{campaign_id}/start", headers=headers)
        assert f"No campaign {campaign_id} for this tenant." in start.text
        timeline = await page.get(f"/dashboard/calls/{call_id}")
        assert timeline.status_code == 404 and f"No call {call_id}" in timeline.text
        home = await page.get("/dashboard")
        assert campaign_id not in home.text and call_id not in home.text
    detail = await client.get(f"/v1/campaigns/{campaign_id}", headers=owner.headers)
    assert detail.json()["status"] == "draft"
    async with signed_in(app, owner) as page:
        mine = await page.get(f"/dashboard/calls/{call_id}")
        assert mine.status_code == 200 and "queued" in mine.text
        assert campaign_id in (await page.get("/dashboard")).text
