"""Benchmark: how fast the dialer works through a queue, against a job-queue yardstick.

Queues N participants (default 100,000) of one tenant dialing from 100 caller IDs, then runs
real `outdial dialer` processes with the simulated carrier at zero latency and no caps (the
tenant's concurrency and calls-per-second set out of reach), until every job is final.
Prints dials per second (first attempt committed → last attempt settled, from the
database's own timestamps) for 1 and 2 dialer processes on PostgreSQL and 1 on SQLite;
then, on the same PostgreSQL server, two well-known Python job queues working through N
no-op jobs as the yardstick: pgqueuer (batch 10, its default, and 100) and procrastinate.

Run: `.venv/bin/python bench/dialer.py [--participants N] [--skip-sqlite] [--skip-yardstick]
[--skip-procrastinate]`
(`pip install -e '.[bench]'` brings pgqueuer and procrastinate). Target (issue 3): our
dialer, doing its real work, at least as fast as the yardstick doing nothing.
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
from scratch_db import create_pg_database, drop_pg_database
from sqlalchemy import func, select

from outdial import migrate
from outdial.agents import service as agents
from outdial.agents.schemas import AgentCreate
from outdial.calls import service as calls
from outdial.calls.models import DialJob
from outdial.calls.schemas import BatchCreate
from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker
from outdial.dialer.models import DialAttempt
from outdial.keys.service import Principal
from outdial.numbers import service as numbers
from outdial.numbers.schemas import NumberCreate
from outdial.tenants import service as tenants

BATCH = 500
CALLER_IDS = 100
"""A high-volume tenant dials from many numbers: carriers pace each caller ID."""


async def seed(url: str, participants: int) -> None:
    """One tenant without caps, its agent (free) and N queued participants."""
    await migrate.upgrade(url)
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        tenant, _ = await tenants.create_tenant(
            session, name="bench", max_concurrency=1_000_000, calls_per_second=1_000_000
        )
        for n in range(CALLER_IDS):
            await numbers.register_number(
                session, tenant_id=tenant.id, data=NumberCreate(phone_number=f"+1555000{n:04d}")
            )
        agent = await agents.create_agent(
            session, tenant_id=tenant.id, data=AgentCreate(name="bench")
        )
    principal = Principal(tenant.id, "bench", "secret", None, (), None)
    settings = Settings(database_url=url)
    for start in range(0, participants, BATCH):
        count = min(BATCH, participants - start)
        recipients = [
            {
                "to": f"+1555{(start + n) % 10_000_000:07d}",
                "from_number": f"+1555000{n % CALLER_IDS:04d}",
            }
            for n in range(count)
        ]
        body = BatchCreate(agent_id=agent.id, recipients=recipients)
        async with sessionmaker() as session, session.begin():
            await calls.queue_batch(session, settings=settings, principal=principal, data=body)
    await engine.dispose()


async def final_jobs(url: str) -> int:
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        done = await session.scalar(
            select(func.count()).where(DialJob.status.in_(("completed", "failed")))
        )
    await engine.dispose()
    return done or 0


async def attempt_span(url: str) -> float:
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        first, last = (
            await session.execute(
                select(func.min(DialAttempt.created_at), func.max(DialAttempt.ended_at))
            )
        ).one()
    await engine.dispose()
    return (last - first).total_seconds()


def start_dialers(url: str, count: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "OUTDIAL_DATABASE_URL": url,
        "OUTDIAL_SIMULATED_SPEED": "1e9",
        "OUTDIAL_DIALER_BATCH_SIZE": "2000",
        "OUTDIAL_DIALER_POLL_SECONDS": "0.01",
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "outdial.cli", "dialer"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


async def run_dialers(url: str, participants: int, processes: int) -> float:
    await seed(url, participants)
    dialers = start_dialers(url, processes)
    try:
        deadline = time.monotonic() + 1800
        while await final_jobs(url) < participants:
            if time.monotonic() > deadline:
                raise RuntimeError("the dialers did not finish in time")
            if any(d.poll() is not None for d in dialers):
                raise RuntimeError("a dialer process died")
            await asyncio.sleep(0.5)
    finally:
        for d in dialers:
            d.send_signal(signal.SIGTERM)
        for d in dialers:
            try:
                d.wait(60)
            except subprocess.TimeoutExpired:
                d.kill()  # never leave a dialer behind to load the next measurement
                raise
    return participants / await attempt_span(url)


async def run_procrastinate(url: str, jobs: int) -> float:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(queue="bench")
    async def noop() -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, jobs, 1000):
            await noop.batch_defer_async(*[{}] * min(1000, jobs - start))
        started = time.perf_counter()
        await app.run_worker_async(
            queues=["bench"], concurrency=10, wait=False, install_signal_handlers=False
        )
        return jobs / (time.perf_counter() - started)


async def run_pgqueuer(url: str, jobs: int, batch_size: int) -> float:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        for start in range(0, jobs, 1000):
            count = min(1000, jobs - start)
            await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
        manager = QueueManager(queries)

        @manager.entrypoint("noop")
        async def noop(_: object) -> None:
            return None

        started = time.perf_counter()
        await manager.run(
            batch_size=batch_size,
            mode=QueueExecutionMode.drain,
            dequeue_timeout=timedelta(seconds=1),
        )
        return jobs / (time.perf_counter() - started)
    finally:
        await conn.close()


async def on_fresh_pg(work, *args):  # type: ignore[no-untyped-def]
    name, url = await create_pg_database()
    try:
        return await work(url, *args)
    finally:
        await drop_pg_database(name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-yardstick", action="store_true")
    parser.add_argument(
        "--skip-procrastinate",
        action="store_true",
        help="procrastinate drains ~70 jobs/s here: 100,000 jobs take ~25 minutes",
    )
    args = parser.parse_args()
    n = args.participants
    print(f"{n:,} participants, simulated carrier at zero latency, no caps")
    for processes in (1, 2):
        rate = await on_fresh_pg(run_dialers, n, processes)
        print(f"postgresql, {processes} dialer process(es): {rate:9,.0f} dials/s")
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            rate = await run_dialers(f"sqlite:///{Path(tmp) / 'bench.db'}", n, 1)
        print(f"sqlite,     1 dialer process:    {rate:9,.0f} dials/s")
    if not args.skip_yardstick:
        for batch_size in (10, 100):
            rate = await on_fresh_pg(run_pgqueuer, n, batch_size)
            print(f"yardstick: pgqueuer, 1 worker, batch {batch_size}, no-op: {rate:9,.0f} jobs/s")
        if args.skip_procrastinate:
            return
        rate = await on_fresh_pg(run_procrastinate, n)
        print(f"yardstick: procrastinate, 1 worker, concurrency 10, no-op: {rate:9,.0f} jobs/s")


if __name__ == "__main__":
    asyncio.run(main())
