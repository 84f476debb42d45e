"""Helpers shared by the calls tests (the fixtures themselves live in tests/conftest.py)."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.conftest import TenantHandle

MakePublishable = Callable[..., Awaitable[TenantHandle]]


@pytest.fixture
def make_publishable(client: httpx.AsyncClient) -> MakePublishable:
    """Issue a publishable key (POST /v1/keys) for one of the tenant's agents."""

    async def make(tenant: TenantHandle, agent_id: str, **fields: Any) -> TenantHandle:
        body = {"type": "publishable", "label": "web", "agent_id": agent_id, **fields}
        response = await client.post("/v1/keys", json=body, headers=tenant.headers)
        assert response.status_code == 201, response.text
        key = response.json()["key"]
        assert key.startswith("sb_publishable_")
        return TenantHandle(id=tenant.id, key=key)

    return make


async def queue_stats(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, int]:
    response = await client.get("/v1/calls/queue/stats", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def balance(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, Any]:
    response = await client.get("/v1/billing/balance", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def count_rows(app: FastAPI, model: Any, *where: Any) -> int:
    """Rows of `model` as a fresh session on its own connection sees them."""
    async with app.state.sessionmaker() as session:
        stmt = select(func.count()).select_from(model)
        if where:
            stmt = stmt.where(*where)
        return await session.scalar(stmt)
