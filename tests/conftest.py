"""Every storage-touching test runs twice: on SQLite and on PostgreSQL.

PostgreSQL is expected on 127.0.0.1:5432 (trust auth); each test session gets a database of
its own, dropped at the end. Under CI (CI=true) a missing PostgreSQL fails the run."""

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import delete

from outdial import migrate
from outdial.app import create_app
from outdial.billing.service import to_micros
from outdial.config import Settings
from outdial.models import metadata
from outdial.tenants import service as tenants

PG_ADMIN_DSN = os.environ.get("OUTDIAL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "one_backend: an API-shape test, run on SQLite only; storage behaviour is proven on "
        "both backends by tests/test_db.py and the tests about storage (dialer, idempotency, "
        "imports, races)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the PostgreSQL runs of `one_backend` tests."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgresql"
        (dropped if on_postgres and item.get_closest_marker("one_backend") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


async def _postgres_reachable() -> str | None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}"
    await conn.close()
    return None


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A fresh, migrated database for this test session, on one backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'outdial.db'}"
        await migrate.upgrade(url)
        yield url
        return
    problem = await _postgres_reachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"outdial_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    # Commits are not flushed to disk before they return: the tests never crash the server,
    # and a flush per commit (~3 ms on this disk) was a large part of the suite's time.
    await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    url = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    try:
        await migrate.upgrade(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(Settings(database_url=database_url))
    async with LifespanManager(application):
        yield application


@pytest.fixture(autouse=True)
async def _empty_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Each storage test starts from empty tables (the schema stays)."""
    yield
    if "app" not in request.fixturenames:
        return
    application: FastAPI = request.getfixturevalue("app")
    async with application.state.sessionmaker() as session, session.begin():
        for table in reversed(metadata.sorted_tables):
            await session.execute(delete(table))


_addresses = (f"10.77.{n // 250 % 250}.{n % 250 + 1}" for n in itertools.count())


def fresh_address() -> str:
    """A client address no other test uses: the API limits requests per address (200 a
    second by default) and counts unknown keys towards the address's lockout for a minute,
    so one test must not spend another's allowance."""
    return next(_addresses)


def client_from(app: FastAPI, address: str | None = None) -> httpx.AsyncClient:
    """A client of the in-process app, at an address of its own (or the one given)."""
    transport = httpx.ASGITransport(app=app, client=(address or fresh_address(), 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://outdial.test")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The suite's client, from an address of this test's own."""
    async with client_from(app) as c:
        yield c


@dataclass
class TenantHandle:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


MakeTenant = Callable[..., Awaitable[TenantHandle]]


@pytest.fixture
def make_tenant(app: FastAPI) -> MakeTenant:
    """Create a tenant (as `outdial tenant create` does) with a secret key."""

    async def make(
        *, credits: float = 1000, max_concurrency: int = 50, calls_per_second: float = 10
    ) -> TenantHandle:
        async with app.state.sessionmaker() as session, session.begin():
            tenant, key = await tenants.create_tenant(
                session,
                name=f"tenant-{uuid.uuid4().hex[:6]}",
                max_concurrency=max_concurrency,
                calls_per_second=calls_per_second,
                credits_micros=to_micros(credits),
            )
        return TenantHandle(id=tenant.id, key=key)

    return make


@pytest.fixture
async def tenant(make_tenant: MakeTenant) -> TenantHandle:
    return await make_tenant()


async def create_agent(
    client: httpx.AsyncClient, tenant: TenantHandle, **fields: Any
) -> dict[str, Any]:
    body = {"name": "Ava", "rate_per_minute": 0.1, **fields}
    response = await client.post("/v1/agents", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def register_number(
    client: httpx.AsyncClient, tenant: TenantHandle, phone_number: str, **fields: Any
) -> dict[str, Any]:
    body = {"phone_number": phone_number, **fields}
    response = await client.post("/v1/numbers", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def agent(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, Any]:
    """The tenant's agent, with +15559990000 registered as the tenant's default caller ID."""
    await register_number(client, tenant, "+15559990000")
    return await create_agent(client, tenant)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]["code"]


ROOT = Path(__file__).resolve().parents[1]


def simulated_outcome(number: str) -> str:
    """API.md, "Running": the simulated carrier's outcome by the number's last two digits.
    Written from the contract, not from the carrier's code, so the tests check one against
    the other."""
    last2 = int(number[-2:])
    if last2 <= 69:
        return "answered"
    if last2 <= 84:
        return "no_answer"
    if last2 <= 94:
        return "busy"
    if last2 <= 97:
        return "voicemail"
    return "carrier_error"
