"""List cursors (issue 13, defect 4): a cursor that is not one the API gives out is a 400 on
every list route, not an empty page."""

import httpx
import pytest

from tests.conftest import TenantHandle, error_code, register_number
from tests.routes import fill


def list_paths(app) -> list[str]:
    """Every GET operation that takes `after`, from the application's own schema."""
    paths = [
        path
        for path, operations in app.openapi()["paths"].items()
        if any(p["name"] == "after" for p in operations.get("get", {}).get("parameters", []))
    ]
    assert len(paths) >= 7, paths
    return sorted(paths)


async def a_campaign(client: httpx.AsyncClient, tenant: TenantHandle, agent_id: str) -> str:
    created = await client.post(
        "/v1/campaigns",
        json={"agent_id": agent_id, "name": "c", "call_from_number": "+15559990000"},
        headers=tenant.headers,
    )
    return created.json()["campaign_id"]


@pytest.mark.parametrize(
    "after",
    ["garbage", "", "null", " 15559990000", "call_123", "CALL_0193f0c2a1b4000001c9d2f3a4b5"],
)
async def test_a_cursor_that_does_not_parse_is_400_everywhere(
    client, app, tenant, agent, after: str
) -> None:
    campaign_id = await a_campaign(client, tenant, agent["id"])
    for url in ("https://93.184.216.34/a", "https://93.184.216.34/b"):  # public addresses
        created = await client.post(
            "/v1/webhooks", json={"url": url, "events": ["*"]}, headers=tenant.headers
        )
        assert created.status_code == 201, created.text
    # A webhook's delivery log pages by delivery: tests/webhooks/test_delivery.py walks it.
    for path in [p for p in list_paths(app) if not p.endswith("/deliveries")]:
        url = fill(path, {"campaign_id": campaign_id})
        response = await client.get(url, params={"after": after}, headers=tenant.headers)
        assert response.status_code == 400, (url, response.text)
        assert error_code(response) == "validation_error"
        [detail] = response.json()["error"]["details"]
        assert detail["loc"] == ["query", "after"] and detail["type"] == "invalid_cursor"
        assert "next_cursor" in detail["message"]


async def test_every_kind_of_cursor_given_out_is_taken_back(client, app, tenant, agent) -> None:
    """Ids, UUIDs and numbers: each list's own next_cursor leads to its next page."""
    await register_number(client, tenant, "+15559990001")
    await client.post("/v1/agents", json={"name": "second"}, headers=tenant.headers)
    await client.post("/v1/keys", json={"type": "secret"}, headers=tenant.headers)
    for number in ("+15559990002", "+15559990003"):
        await client.post("/v1/dnc", json={"phone_number": number}, headers=tenant.headers)
    for _ in range(2):
        await client.post(
            "/v1/calls/batch",
            json={"agent_id": agent["id"], "to": ["+15559990004"]},
            headers=tenant.headers,
        )
    campaign_id = await a_campaign(client, tenant, agent["id"])
    await a_campaign(client, tenant, agent["id"])
    await client.post(
        f"/v1/campaigns/{campaign_id}/contacts",
        json={"contacts": [{"phone_number": "15559990005"}, {"phone_number": "15559990006"}]},
        headers=tenant.headers,
    )
    for url in ("https://93.184.216.34/a", "https://93.184.216.34/b"):  # public addresses
        created = await client.post(
            "/v1/webhooks", json={"url": url, "events": ["*"]}, headers=tenant.headers
        )
        assert created.status_code == 201, created.text
    # A webhook's delivery log pages by delivery: tests/webhooks/test_delivery.py walks it;
    # a call's attempts exist once dialed: tests/calls/test_attempts.py walks them.
    for path in [p for p in list_paths(app) if not p.endswith(("/deliveries", "/attempts"))]:
        url = fill(path, {"campaign_id": campaign_id})
        first = await client.get(url, params={"limit": 1}, headers=tenant.headers)
        cursor = first.json()["next_cursor"]
        assert cursor is not None, url
        second = await client.get(url, params={"limit": 1, "after": cursor}, headers=tenant.headers)
        assert second.status_code == 200, (url, second.text)
        assert second.json()["data"] and second.json()["data"] != first.json()["data"]
