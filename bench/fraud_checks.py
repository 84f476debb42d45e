"""Benchmark: what issue 10's toll-fraud checks add to a 500-recipient `POST /v1/calls/batch`.

In-process (the application over httpx's ASGI transport, no network), on SQLite and on a
fresh PostgreSQL database: batches with rate limiting on and off, interleaved, so that both
see the same machine; and, timed alone, the rate-limit check (PostgreSQL: one upsert on its
own connection; SQLite: process memory) and the dialing-permission check (one query and 500
numbers classified). Minimums and medians over many runs, so a busy machine blurs them less.
Run: `.venv/bin/python bench/fraud_checks.py [--batches N]`.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from scratch_db import create_pg_database, drop_pg_database

from outdial import migrate
from outdial.app import create_app
from outdial.billing.service import to_micros
from outdial.config import Settings
from outdial.permissions import service as permissions
from outdial.ratelimit.limiter import make_rate_limiter
from outdial.tenants import service as tenants

RECIPIENTS = 500
NO_LIMITS = {
    "rate_limit_per_secret_key": 0,
    "rate_limit_per_publishable_key": 0,
    "rate_limit_per_ip": 0,
    "auth_failures_per_ip": 0,
}


async def timings(work: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    found = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        found.append((time.perf_counter() - started) * 1000)
    return found


def summary(values: list[float]) -> str:
    return f"min {min(values):6.2f} ms, median {statistics.median(values):6.2f} ms"


async def run(database_url: str, batches: int) -> None:
    await migrate.upgrade(database_url)
    limited = create_app(Settings(database_url=database_url))
    unlimited = create_app(Settings(database_url=database_url, **NO_LIMITS))
    async with LifespanManager(limited), LifespanManager(unlimited):
        async with limited.state.sessionmaker() as session, session.begin():
            tenant, key = await tenants.create_tenant(
                session,
                name="bench",
                max_concurrency=50,
                calls_per_second=10,
                credits_micros=to_micros(10**9),
            )
        headers = {"Authorization": f"Bearer {key}"}
        clients = {
            name: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench", headers=headers
            )
            for name, app in (("limited", limited), ("unlimited", unlimited))
        }
        http = clients["limited"]
        (await http.post("/v1/numbers", json={"phone_number": "+15550000000"})).raise_for_status()
        agent = (await http.post("/v1/agents", json={"name": "b", "rate_per_minute": 0.1})).json()
        serial = iter(range(10**7))

        async def batch(client: httpx.AsyncClient) -> None:
            start = next(serial) * RECIPIENTS
            to = [f"+1555{(start + n) % 10_000_000:07d}" for n in range(RECIPIENTS)]
            response = await client.post(
                "/v1/calls/batch", json={"agent_id": agent["id"], "to": to}
            )
            assert response.status_code == 202, response.text

        for client in clients.values():  # warm up
            for _ in range(5):
                await batch(client)
        times: dict[str, list[float]] = {"limited": [], "unlimited": []}
        for _ in range(batches):
            for name, client in clients.items():
                times[name] += await timings(lambda c=client: batch(c), 1)

        # The check as the limited app makes it, with limits too high to refuse: always counted.
        huge = {name: 10**9 for name in NO_LIMITS}
        limiter = make_rate_limiter(
            limited.state.engine, Settings(database_url=database_url, **huge)
        )
        check = await timings(lambda: limiter.check(address="10.0.0.1", token=key), 1000)
        numbers = [f"+1555{n:07d}" for n in range(RECIPIENTS)]

        async def permission_check() -> None:
            async with limited.state.sessionmaker() as session:
                refused = await permissions.refused_destinations(
                    session, tenant_id=tenant.id, numbers=numbers
                )
                assert not refused

        permitted = await timings(permission_check, 200)
        for client in clients.values():
            await client.aclose()

    on, off = times["limited"], times["unlimited"]
    print(f"  batch, rate limits on:   {summary(on)}")
    print(f"  batch, rate limits off:  {summary(off)}")
    print(
        f"  difference of medians:   {statistics.median(on) - statistics.median(off):+.2f} ms "
        f"({(statistics.median(on) / statistics.median(off) - 1) * 100:+.1f} %)"
    )
    print(f"  rate-limit check alone:  {summary(check)}")
    print(f"  permission check alone:  {summary(permitted)} (query + 500 numbers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    print(f"{RECIPIENTS} recipients a batch, {args.batches} batches each way, in-process")
    with tempfile.TemporaryDirectory() as tmp:
        print("sqlite:")
        asyncio.run(run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.batches))
    name, url = asyncio.run(create_pg_database())
    try:
        print("postgresql:")
        asyncio.run(run(url, args.batches))
    finally:
        asyncio.run(drop_pg_database(name))


if __name__ == "__main__":
    main()
