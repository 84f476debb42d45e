"""Helpers shared by the campaign tests (the fixtures themselves live in tests/conftest.py)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import TenantHandle
from tests.dialer.conftest import cdr_path, running_dialer

__all__ = ["cdr_path", "running_dialer"]  # the dialer tests' fixtures, used here too


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


def open_window(**extra: Any) -> dict[str, Any]:
    """A calling window open now (and for two hours either side) in UTC, the zone the +1555
    test numbers are judged in (libphonenumber cannot place them)."""
    now = datetime.now(UTC)
    return {
        "start": (now - timedelta(hours=2)).strftime("%H:%M"),
        "end": (now + timedelta(hours=2)).strftime("%H:%M"),
        **extra,
    }


def fast_settings(**extra: Any) -> dict[str, Any]:
    return {
        "max_concurrency": 50,
        "calls_per_second": 100,
        "calling_window": open_window(),
        **extra,
    }
