"""Helpers shared by the campaign tests (the fixtures themselves live in tests/conftest.py)."""

from typing import Any

import httpx

from tests.conftest import TenantHandle


async def create_campaign(
    client: httpx.AsyncClient, tenant: TenantHandle, agent_id: str, **fields: Any
) -> str:
    body = {
        "agent_id": agent_id,
        "name": "Spring renewals",
        "call_from_number": "+15559990000",
        **fields,
    }
    response = await client.post("/v1/campaigns", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {"status", "campaign_id"}
    assert created["status"] == "created"
    assert created["campaign_id"].startswith("cmp_")
    return created["campaign_id"]


async def add_contacts(
    client: httpx.AsyncClient, tenant: TenantHandle, campaign_id: str, numbers: list[str]
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json={"contacts": [{"phone_number": n} for n in numbers]},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def campaign(
    client: httpx.AsyncClient, tenant: TenantHandle, campaign_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/campaigns/{campaign_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def post(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str, **kwargs: Any
) -> httpx.Response:
    return await client.post(path, headers=tenant.headers, **kwargs)
