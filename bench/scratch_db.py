"""Throw-away PostgreSQL databases for the benchmarks, on the server the tests use."""

import os
import uuid

import asyncpg

PG_ADMIN = os.environ.get("OUTDIAL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def create_pg_database() -> tuple[str, str]:
    """A new, empty database: its name and its URL."""
    name = f"outdial_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name, PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()
