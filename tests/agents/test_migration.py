"""The agent-streams migration on a database that already has agents, on both backends:
every existing agent gets a stream secret of its own, and end reasons take
`agent_unavailable` (17 characters) where VARCHAR lengths are enforced."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text

from outdial.db import create_engine
from outdial.migrate import alembic_config
from tests.conftest import BACKENDS, PG_ADMIN_DSN, _postgres_reachable

BEFORE = "0e53d80c6eb7"


@pytest.fixture(params=BACKENDS)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    if problem := await _postgres_reachable():
        pytest.skip(problem)
    name = f"outdial_migration_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def migrate_to(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
    finally:
        await engine.dispose()


async def test_existing_agents_get_a_secret_each(empty_database: str) -> None:
    await migrate_to(empty_database, BEFORE)
    engine = create_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO tenants (id, name, max_concurrency, calls_per_second, "
                    "is_active, balance_micros, held_micros, created_at) "
                    "VALUES ('t1', 't', 1, 1, true, 0, 0, CURRENT_TIMESTAMP)"
                )
            )
            for n in range(3):
                await conn.execute(
                    text(
                        "INSERT INTO agents (id, tenant_id, name, rate_per_minute_micros, "
                        "voicemail_behavior, post_call, config, created_at, updated_at) "
                        f"VALUES ('{uuid.uuid4()}', 't1', 'a{n}', 0, 'hangup', '{{}}', '{{}}', "
                        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    )
                )
        await migrate_to(empty_database, "head")
        async with engine.begin() as conn:
            rows = (await conn.execute(text("SELECT stream_url, stream_secret FROM agents"))).all()
            assert [url for url, _ in rows] == [None, None, None]
            secrets = {secret for _, secret in rows}
            assert len(secrets) == 3 and all(s.startswith("whsec_") for s in secrets)
            await conn.execute(
                text(
                    "INSERT INTO dial_attempts (id, job_id, participant_id, call_id, tenant_id, "
                    "attempt_no, status, provider, to_number, from_number, dialer_id, dial_at, "
                    "created_at, end_reason) VALUES ('a1', 'j1', 'p1', 'c1', 't1', 1, 'ended', "
                    "'sip', '+1', '+1', 'd', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
                    "'agent_unavailable')"
                )
            )
    finally:
        await engine.dispose()
