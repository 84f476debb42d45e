"""Helpers for the webhook tests: endpoints made through the API, events emitted in real
transactions, delivery workers with a clock the test moves, receivers on loopback."""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from outdial.config import Settings
from outdial.db import utcnow
from outdial.webhooks import deliveries
from outdial.webhooks.deliveries import Claimed
from outdial.webhooks.outbox import EventType, NewEvent, emit_events
from outdial.webhooks.worker import DeliveryWorker
from tests.conftest import TenantHandle
from tests.webhooks.receiver import Receiver, receiving

SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
"""API.md's retry schedule, in seconds, written here from the contract."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `api_shape` run on SQLite only: what they check does not depend on the
    storage backend (everything that touches storage runs on both). Tests marked
    `postgresql_only` check what only PostgreSQL does (concurrent writers)."""
    for item in list(items):
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec is not None else None
        if (item.get_closest_marker("api_shape") and backend == "postgresql") or (
            item.get_closest_marker("postgresql_only") and backend == "sqlite"
        ):
            items.remove(item)
            config.hook.pytest_deselected(items=[item])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "api_shape: run on SQLite only (no storage behaviour)")
    config.addinivalue_line("markers", "postgresql_only: what only PostgreSQL does")


@pytest.fixture
def allow_private(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API accepts loopback URLs (the tests' receivers), as the setting allows."""
    monkeypatch.setattr(app.state.settings, "webhook_allow_private_urls", True)


async def create_webhook(
    client: httpx.AsyncClient, tenant: TenantHandle, url: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks", json={"url": url, **fields}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


Subscribe = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def subscribe(client: httpx.AsyncClient, allow_private: None) -> Subscribe:
    """Point a webhook of `tenant` at `receiver`, which then verifies with its secret."""

    async def make(tenant: TenantHandle, receiver: Receiver, **fields: Any) -> dict[str, Any]:
        endpoint = await create_webhook(client, tenant, receiver.url, **fields)
        receiver.secret = endpoint["secret"]
        return endpoint

    return make


def event(
    tenant: TenantHandle | str,
    key: str = "call_1",
    *,
    type: EventType = EventType.CALL_PARTICIPANT_UPDATED,
    **data: Any,
) -> NewEvent:
    return NewEvent(
        tenant_id=tenant if isinstance(tenant, str) else tenant.id,
        type=type,
        data={"call_id": key, **data},
        ordering_key=key,
        occurred_at=utcnow(),
    )


Emit = Callable[..., Awaitable[None]]


@pytest.fixture
def emit(app: FastAPI) -> Emit:
    """Emit events in a transaction of their own that commits."""

    async def run(*events: NewEvent) -> None:
        async with app.state.sessionmaker() as session, session.begin():
            await emit_events(session, events)

    return run


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    # Ahead of the wall clock, so that what emit_events queued (due at its own now) is due.
    return Clock(utcnow() + timedelta(seconds=1))


async def lease_due(app: FastAPI, now: datetime, limit: int = 100) -> list[Claimed]:
    """Claim due deliveries as a delivery process would, without sending them (one that
    froze, or one whose send is still running)."""
    async with app.state.sessionmaker() as session, session.begin():
        return await deliveries.claim(
            session,
            now=now,
            lease=timedelta(seconds=30),
            limit=limit,
            endpoint_busy={},
            endpoint_cap=1000,
        )


def worker_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        webhook_allow_private_urls=overrides.pop("webhook_allow_private_urls", True),
        webhook_poll_seconds=overrides.pop("webhook_poll_seconds", 0.01),
        **overrides,
    )


MakeWorker = Callable[..., DeliveryWorker]


@pytest.fixture
def make_worker(app: FastAPI, database_url: str) -> MakeWorker:
    """A delivery worker on the test database (private URLs allowed unless told)."""

    def make(clock: Callable[[], datetime] = utcnow, **overrides: Any) -> DeliveryWorker:
        resolver = overrides.pop("resolver", None)
        extra = {"resolver": resolver} if resolver else {}
        return DeliveryWorker(
            app.state.sessionmaker, worker_settings(database_url, **overrides), clock=clock, **extra
        )

    return make
