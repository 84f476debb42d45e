"""The compliance migration on a database that already has calls and dial attempts, on both
backends: existing calls take no state rules, existing attempts have no checks recorded, and
the downgrade gives the rows back as they were."""

from alembic import command
from sqlalchemy import Connection, text

from outdial.db import create_engine
from outdial.migrate import alembic_config
from tests.agents.test_migration import empty_database, migrate_to

__all__ = ["empty_database"]  # the fixture, used here too

BEFORE = "5f3a9c1e7b20"
ROWS = [
    "INSERT INTO tenants (id, name, max_concurrency, calls_per_second, is_active, "
    "balance_micros, held_micros, created_at) VALUES ('t1', 't', 1, 1, true, 0, 0, "
    "CURRENT_TIMESTAMP)",
    "INSERT INTO agents (id, tenant_id, name, rate_per_minute_micros, voicemail_behavior, "
    "post_call, config, stream_secret, created_at, updated_at) VALUES "
    "('00000000-0000-7000-8000-000000000001', 't1', 'a', 0, 'hangup', '{}', '{}', 'whsec_x', "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "INSERT INTO calls (id, tenant_id, agent_id, kind, status, metadata, variables, post_call, "
    "ring_timeout_seconds, created_at) VALUES ('c1', 't1', "
    "'00000000-0000-7000-8000-000000000001', 'batch', 'completed', '{}', '{}', '{}', 30, "
    "CURRENT_TIMESTAMP)",
    "INSERT INTO dial_attempts (id, job_id, participant_id, call_id, tenant_id, attempt_no, "
    "status, provider, to_number, from_number, dialer_id, dial_at, created_at) VALUES "
    "('a1', 'j1', 'p1', 'c1', 't1', 1, 'ended', 'sip', '+15559990001', '+15559990000', 'd', "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
]


async def test_existing_calls_and_attempts_survive_the_migration_both_ways(
    empty_database: str,
) -> None:
    await migrate_to(empty_database, BEFORE)
    engine = create_engine(empty_database)
    try:
        async with engine.begin() as conn:
            for row in ROWS:
                await conn.execute(text(row))
        await migrate_to(empty_database, "head")
        async with engine.begin() as conn:
            call = (
                await conn.execute(text("SELECT state_rules, max_attempts_per_24h FROM calls"))
            ).one()
            assert (bool(call.state_rules), call.max_attempts_per_24h) == (False, None)
            checks = (await conn.execute(text("SELECT id, checks FROM dial_attempts"))).all()
            assert [tuple(row) for row in checks] == [("a1", None)]
        async with engine.connect() as conn:
            await conn.run_sync(_downgrade)
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT id FROM calls"))).scalars().all() == ["c1"]
            assert (await conn.execute(text("SELECT id FROM dial_attempts"))).scalars().all() == [
                "a1"
            ]
    finally:
        await engine.dispose()


def _downgrade(sync_connection: Connection) -> None:
    with sync_connection.begin():
        command.downgrade(alembic_config(sync_connection), BEFORE)
