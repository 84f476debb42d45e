"""Benchmark: how fast the dialer works through a queue, against a job-queue yardstick.

Queues N participants (default 20,000) of one tenant, each batch's recipients spread over
its caller IDs, then runs real `outdial dialer` processes with default settings and the
simulated carrier at zero latency until every job is final. Two scenarios:
- `unpaced`: 100 caller IDs, pacing and caps out of reach (1,000,000 calls/s per caller ID);
- `paced`: 20 caller IDs at 1,000 calls/s each (the contract's maximum), the way a user can
  configure it (issue 15).
Prints dials per second (first attempt committed → last attempt settled, from the database's
own timestamps) and, per 1,000 dials, those that missed their pacing slot (re-slotted, or
handed back to the queue after three misses), for 1 and 2
dialer processes on PostgreSQL and 1 on SQLite; then, on the same PostgreSQL server, the
yardstick: pgqueuer draining N no-op jobs (1 worker at batch 10, its default, and 100; 2
worker processes at batch 100), and optionally procrastinate.

With `--webhooks`, each PostgreSQL measurement is made twice, side by side: without a webhook
endpoint, then with one taking every event (`"*"`) and a real `outdial webhooks` process
delivering them to a receiver on loopback while the dialers run (issue 12: the dialer's
figure drops by ≤ 10 %). The delivery process then runs on until every event is delivered,
and its report says how many it delivered while the dialers ran and how long after the last
dial it delivered the last (or how many were left after `--drain-seconds`). `--outbox-only`
leaves the delivery process out: what writing the events costs the dialer itself.
`--repeat N` makes N such pairs, one after the other, and prints the median ratio (a shared
machine's speed swings between runs).

Run: `.venv/bin/python bench/dialer.py [--scenario paced|unpaced] [--participants N]
[--caller-ids K --cps R] [--processes 1,2] [--skip-sqlite] [--skip-yardstick] [--procrastinate]
[--webhooks [--outbox-only] [--repeat N] [--drain-seconds S]]`
(`pip install -e '.[bench]'` brings pgqueuer and procrastinate). Targets (issue 15): 2 dialer
processes at least 1.0 times pgqueuer with 2 workers at batch 100, in both scenarios; 1
SQLite dialer at least 0.8 times that; ≤ 1 hand-back per 1,000 dials.
"""

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from scratch_db import create_pg_database, drop_pg_database
from sqlalchemy import func, select
from webhooks import start_receiver

from outdial import migrate
from outdial.agents import service as agents
from outdial.agents.schemas import AgentCreate
from outdial.calls import service as calls
from outdial.calls.schemas import BatchCreate
from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker
from outdial.dialer.models import DialAttempt, DialJob
from outdial.keys.service import Principal
from outdial.numbers import service as numbers
from outdial.numbers.schemas import NumberCreate
from outdial.tenants import service as tenants
from outdial.webhooks import service as webhooks
from outdial.webhooks.models import WebhookDelivery
from outdial.webhooks.schemas import WebhookCreate

BATCH = 500
SCENARIOS = {"unpaced": (100, 1_000_000.0), "paced": (20, 1_000.0)}
"""(caller IDs, calls per second per caller ID): a high-volume tenant dials from many
numbers, and carriers pace each caller ID."""
DRAIN_SECONDS = 300.0
"""How long the delivery process may run on after the dialers stop, unless --drain-seconds."""
HANDED_BACK = "missed its dial slot by"
"""Log lines of dials that missed their slot: each ends "; re-slotted" (a new slot, one small
transaction) or "; handed back" (withdrawn and claimed again, after three misses)."""


async def seed(
    url: str, participants: int, caller_ids: int, cps: float, webhook_url: str | None = None
) -> None:
    """One tenant without a concurrency cap, pacing each caller ID at `cps`, its agent (free)
    and N queued participants spread over its caller IDs; with `webhook_url`, an endpoint
    there taking every event."""
    await migrate.upgrade(url)
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        tenant, _ = await tenants.create_tenant(
            session, name="bench", max_concurrency=1_000_000, calls_per_second=cps
        )
        for n in range(caller_ids):
            await numbers.register_number(
                session, tenant_id=tenant.id, data=NumberCreate(phone_number=f"+1555000{n:04d}")
            )
        agent = await agents.create_agent(
            session, tenant_id=tenant.id, data=AgentCreate(name="bench")
        )
        if webhook_url is not None:
            await webhooks.create_webhook(
                session,
                settings=Settings(database_url=url, webhook_allow_private_urls=True),
                tenant_id=tenant.id,
                data=WebhookCreate(url=webhook_url),
            )
    principal = Principal(tenant.id, "bench", "secret", None, (), None)
    settings = Settings(database_url=url)
    for start in range(0, participants, BATCH):
        count = min(BATCH, participants - start)
        recipients = [
            {
                "to": f"+1555{(start + n) % 10_000_000:07d}",
                "from_number": f"+1555000{n % caller_ids:04d}",
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


def start_dialers(url: str, count: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """`outdial dialer` processes with default settings, their logs in `logs`."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")},
        "OUTDIAL_DATABASE_URL": url,
        "OUTDIAL_SIMULATED_SPEED": "1e9",
        "OUTDIAL_LOG_FORMAT": "text",
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "outdial.cli", "dialer"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"dialer-{n}.log").open("wb"),
        )
        for n in range(count)
    ]


async def run_dialers(
    url: str,
    participants: int,
    processes: int,
    caller_ids: int,
    cps: float,
    webhook_url: str | None = None,
    deliver: bool = True,
    drain_seconds: float = DRAIN_SECONDS,
) -> tuple[float, float, float]:
    """Dials per second, and per 1,000 dials those handed back and those re-slotted. With a
    delivery process, it runs on after the dialers stop until every event is delivered, and
    how it kept up is printed."""
    await seed(url, participants, caller_ids, cps, webhook_url)
    logs = Path(tempfile.mkdtemp(prefix="outdial-bench-"))
    dialers = start_dialers(url, processes, logs)
    delivery = start_delivery(url, logs) if webhook_url is not None and deliver else None
    try:
        deadline = time.monotonic() + 1800
        while await final_jobs(url) < participants:
            if time.monotonic() > deadline:
                raise RuntimeError("the dialers did not finish in time")
            if any(d.poll() is not None for d in [*dialers, *([delivery] if delivery else [])]):
                raise RuntimeError("a dialer or delivery process died")
            await asyncio.sleep(0.5)
        stop_all(dialers)
        if delivery is not None:
            deadline = time.monotonic() + drain_seconds
            while await undelivered(url) and time.monotonic() < deadline:
                if delivery.poll() is not None:
                    raise RuntimeError("the delivery process died")
                await asyncio.sleep(0.5)
    finally:
        stop_all([*dialers, *([delivery] if delivery else [])])
    back, reslotted = missed_slots(logs)
    per_1000 = 1000 / participants
    if delivery is not None:
        print(await delivery_report(url, drain_seconds))
    return participants / await attempt_span(url), back * per_1000, reslotted * per_1000


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave a process behind to load the next measurement
            raise


async def undelivered(url: str) -> int:
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        left = await session.scalar(
            select(func.count()).where(WebhookDelivery.finished_at.is_(None))
        )
    await engine.dispose()
    return left or 0


async def delivery_report(url: str, drain_seconds: float) -> str:
    """How the delivery process kept up: events delivered while the dialers ran (per second)
    and how long after the last dial ended the last one was delivered."""
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        first, last = (
            await session.execute(
                select(func.min(DialAttempt.created_at), func.max(DialAttempt.ended_at))
            )
        ).one()
        d = WebhookDelivery
        total, during, done = (
            await session.execute(
                select(
                    func.count(),
                    func.count().filter(d.finished_at <= last),
                    func.max(d.finished_at),
                ).where(d.status == "delivered")
            )
        ).one()
        left = await session.scalar(select(func.count()).where(d.status != "delivered"))
    await engine.dispose()
    span = (last - first).total_seconds()
    report = (
        f"      {total:,} events delivered: {during:,} while dialing ({during / span:,.0f}/s), "
        f"the last {(done - last).total_seconds():.1f} s after the last dial ended"
    )
    return report + (f"; {left:,} left after {drain_seconds:g} s" if left else "")


def start_delivery(url: str, logs: Path) -> subprocess.Popen[bytes]:
    """An `outdial webhooks` process delivering what the dialers' changes write."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")},
        "OUTDIAL_DATABASE_URL": url,
        "OUTDIAL_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "OUTDIAL_LOG_FORMAT": "text",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "outdial.cli", "webhooks"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(logs / "webhooks.log").open("wb"),
    )


def missed_slots(logs: Path) -> tuple[int, int]:
    """(handed back, re-slotted) in the dialers' logs."""
    lines = [
        line
        for log in logs.glob("*.log")
        for line in log.read_text().splitlines()
        if HANDED_BACK in line
    ]
    back = sum(1 for line in lines if line.endswith("handed back"))
    return back, len(lines) - back


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


async def run_pgqueuer(url: str, jobs: int, batch_size: int, workers: int = 1) -> float:
    """pgqueuer's workers (each a process of its own) draining `jobs` no-op jobs: jobs per
    second from the first job taken to the queue empty, read from its table."""
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        for start in range(0, jobs, 1000):
            count = min(1000, jobs - start)
            await queries.enqueue(["noop"] * count, [None] * count, [0] * count)
        code = PGQUEUER_WORKER.format(url=url, batch_size=batch_size)
        started = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, stdout=subprocess.DEVNULL
            )
            for _ in range(workers)
        ]
        try:
            first = last = None
            while True:
                left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
                now = time.perf_counter()
                if first is None and left < jobs:
                    first = now
                if left == 0:
                    last = now
                    break
                await asyncio.sleep(0.01)
        finally:
            for worker in started:
                await asyncio.wait_for(worker.wait(), 60)
        assert first is not None and last is not None
        return jobs / max(last - first, 1e-6)
    finally:
        await conn.close()


PGQUEUER_WORKER = """
import asyncio
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.domain.types import QueueExecutionMode


async def main():
    conn = await asyncpg.connect({url!r})
    manager = QueueManager(Queries(AsyncpgDriver(conn)))

    @manager.entrypoint("noop")
    async def noop(_):
        return None

    await manager.run(
        batch_size={batch_size},
        mode=QueueExecutionMode.drain,
        dequeue_timeout=timedelta(seconds=1),
    )


asyncio.run(main())
"""


async def on_fresh_pg(work, *args):  # type: ignore[no-untyped-def]
    name, url = await create_pg_database()
    try:
        return await work(url, *args)
    finally:
        await drop_pg_database(name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--participants", type=int, default=20_000)
    parser.add_argument("--caller-ids", type=int, help="instead of the scenario's")
    parser.add_argument("--cps", type=float, help="calls per second per caller ID, likewise")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-yardstick", action="store_true")
    parser.add_argument(
        "--procrastinate", action="store_true", help="it drains ~70 jobs/s: slow to measure"
    )
    parser.add_argument(
        "--processes",
        type=lambda text: [int(p) for p in text.split(",")],
        default=[1, 2],
        help="dialer processes on PostgreSQL, comma-separated [1,2]",
    )
    parser.add_argument("--webhooks", action="store_true", help="with and without, side by side")
    parser.add_argument(
        "--repeat", type=int, default=1, help="with --webhooks: pairs per measure (a loaded box)"
    )
    parser.add_argument(
        "--drain-seconds",
        dest="drain",
        type=float,
        default=DRAIN_SECONDS,
        help="with --webhooks: how long delivery may run on after the dialers stop",
    )
    parser.add_argument(
        "--outbox-only",
        action="store_true",
        help="with --webhooks: events written but no delivery process (the dialer's own cost)",
    )
    args = parser.parse_args()
    n = args.participants
    if args.webhooks:
        receiver, base = start_receiver()
        receiver_url = f"{base}/hooks"
    try:
        await measure(args, n, receiver_url if args.webhooks else "")
    finally:
        if args.webhooks:
            receiver.terminate()


async def measure(args: argparse.Namespace, n: int, receiver_url: str) -> None:
    for scenario in args.scenario or ["unpaced", "paced"]:
        caller_ids, cps = SCENARIOS[scenario]
        caller_ids, cps = args.caller_ids or caller_ids, args.cps or cps
        print(f"{scenario}: {n:,} participants, {caller_ids} caller IDs at {cps:,.0f} calls/s")
        for processes in args.processes:
            ratios = []
            for _ in range(args.repeat):
                rate, back, moved = await on_fresh_pg(run_dialers, n, processes, caller_ids, cps)
                print(
                    f"  postgresql, {processes} dialer process(es): {rate:9,.0f} dials/s, "
                    f"per 1,000: {back:5.1f} handed back, {moved:5.1f} re-slotted",
                    flush=True,
                )
                if not args.webhooks:
                    continue
                deliver = not args.outbox_only
                hooked, back, moved = await on_fresh_pg(
                    run_dialers, n, processes, caller_ids, cps, receiver_url, deliver, args.drain
                )
                how = "a delivery process running" if deliver else "events written, none sent"
                ratios.append(hooked / rate)
                print(
                    f"    with webhooks on ({how}): {hooked:9,.0f} dials/s, "
                    f"per 1,000: {back:5.1f} handed back, {moved:5.1f} re-slotted; "
                    f"{hooked / rate:.2f} x without",
                    flush=True,
                )
            if len(ratios) > 1:
                print(
                    f"    {processes} dialer process(es), webhooks on: median "
                    f"{statistics.median(ratios):.2f} x without ({len(ratios)} pairs)"
                )
        if not args.skip_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                rate, back, moved = await run_dialers(url, n, 1, caller_ids, cps)
            print(
                f"  sqlite,     1 dialer process:    {rate:9,.0f} dials/s, "
                f"per 1,000: {back:5.1f} handed back, {moved:5.1f} re-slotted"
            )
    if args.skip_yardstick:
        return
    for workers, batch_size in ((1, 10), (1, 100), (2, 100)):
        rate = await on_fresh_pg(run_pgqueuer, n, batch_size, workers)
        print(
            f"yardstick: pgqueuer, {workers} worker process(es), batch {batch_size}, no-op: "
            f"{rate:9,.0f} jobs/s"
        )
    if args.procrastinate:
        rate = await on_fresh_pg(run_procrastinate, n)
        print(f"yardstick: procrastinate, 1 worker, concurrency 10, no-op: {rate:9,.0f} jobs/s")


if __name__ == "__main__":
    asyncio.run(main())
