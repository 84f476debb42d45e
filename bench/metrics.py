"""`/metrics` with 1,000,000 dial jobs in the queue on PostgreSQL.

    .venv/bin/python bench/metrics.py [--jobs 1000000]

Fills a throw-away database with jobs in every state, then times what a scrape costs: the
queue count itself (what a scrape would wait for if it counted), and `/metrics` as served
(the count refreshed in the background), against `/healthz` through the same stack as the
yardstick."""

import argparse
import asyncio
import statistics
import time

import httpx
from asgi_lifespan import LifespanManager
from scratch_db import create_pg_database, drop_pg_database

from outdial import migrate
from outdial.app import create_app
from outdial.config import Settings
from outdial.observability.metrics import count_jobs_by_state

FILL = """
INSERT INTO dial_jobs (id, tenant_id, call_id, participant_id, status, to_number, from_number,
                       variables, campaign_id, attempt, max_attempts, run_at, created_at)
SELECT 'job_' || g, 'ten_' || (g % 20), 'call_' || g, 'participant_' || g,
       CASE WHEN g % 1000 < 900 THEN 'completed' WHEN g % 1000 < 990 THEN 'waiting'
            WHEN g % 1000 < 999 THEN 'failed' ELSE 'active' END,
       '+15550000000', '+15559990000', '{}'::jsonb, NULL, 1, 1, now(), now()
FROM generate_series(1, $1) AS g
"""


async def timed(n: int, work) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> str:
    times = sorted(times)
    p95 = times[int(len(times) * 0.95) - 1]
    return f"median {statistics.median(times):.2f} ms, p95 {p95:.2f} ms"


async def main(jobs: int) -> None:
    name, url = await create_pg_database()
    try:
        await migrate.upgrade(url)
        app = create_app(Settings(database_url=url))
        async with LifespanManager(app):
            async with app.state.engine.begin() as conn:
                started = time.perf_counter()
                await conn.exec_driver_sql(FILL.replace("$1", str(jobs)))
                print(f"filled {jobs:,} jobs in {time.perf_counter() - started:.1f} s")
            async with app.state.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE dial_jobs")

            async def count() -> None:
                async with app.state.sessionmaker() as session:
                    await count_jobs_by_state(session)

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as api:
                await api.get("/metrics")
                await asyncio.sleep(2)  # let the first background count finish
                count_ms = await timed(10, count)
                health_ms = await timed(200, lambda: api.get("/healthz"))
                metrics_ms = await timed(200, lambda: api.get("/metrics"))
                text = (await api.get("/metrics")).text
        print(
            "queue gauge:",
            [line for line in text.splitlines() if line.startswith("outdial_queue_jobs{")],
        )
        print(f"the count itself (GROUP BY status over {jobs:,} jobs): {summary(count_ms)}")
        print(f"/healthz (yardstick): {summary(health_ms)}")
        print(f"/metrics: {summary(metrics_ms)}")
        ratio = statistics.median(metrics_ms) / statistics.median(health_ms)
        print(f"/metrics / /healthz: {ratio:.1f}x")
    finally:
        await drop_pg_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().jobs))
