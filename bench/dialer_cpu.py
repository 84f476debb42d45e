"""Benchmark: the dialer's CPU per dial, which a loaded machine hardly moves (dials per second,
bench/dialer.py's measure, swings with whatever else runs).

Seeds N participants as bench/dialer.py does (unpaced: 100 caller IDs, no caps), runs one
dialer in this process until every job is final, and prints its CPU time per dial and, on
PostgreSQL, that of its connections' backends (from /proc: run it on the database's host).
To compare two checkouts, run each with `PYTHONPATH=<checkout>/src`, alternating.
With `--webhooks`, each backend is measured twice, side by side: without a webhook endpoint,
then with one taking every event (written to the outbox; no delivery process): what writing
the events costs the dialer and the database per dial (issue 12).

Run: `.venv/bin/python bench/dialer_cpu.py [--participants N] [--skip-sqlite] [--webhooks]`.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from dialer import attempt_span, final_jobs, seed
from scratch_db import create_pg_database, drop_pg_database
from sqlalchemy import text
from webhooks import process_cpu

from outdial import wiring
from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker
from outdial.dialer.worker import Dialer

CALLER_IDS, CPS = 100, 1_000_000.0
OUTBOX_ONLY_URL = "http://127.0.0.1:9/hooks"
"""The endpoint of `--webhooks`: never called, for no delivery process runs."""


async def measure(url: str, participants: int, webhooks: bool) -> tuple[float, float, float]:
    """Dials per second, the dialer's CPU µs per dial, its backends' CPU µs per dial."""
    await seed(url, participants, CALLER_IDS, CPS, OUTBOX_ONLY_URL if webhooks else None)
    wiring.plug_all()
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    dialer = Dialer(sessionmaker, Settings(database_url=url, simulated_speed=1e9))
    stop = asyncio.Event()
    started = time.process_time()
    running = asyncio.create_task(dialer.run(stop))
    deadline = time.monotonic() + 1800
    while await final_jobs(url) < participants:
        if time.monotonic() > deadline:
            raise RuntimeError("the dialer did not finish in time")
        await asyncio.sleep(0.2)
    stop.set()
    await running
    cpu = time.process_time() - started
    backends = 0.0
    if engine.dialect.name == "postgresql":
        async with sessionmaker() as session:
            pids = await session.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
            backends = sum(process_cpu(pid) for pid in pids)
    await engine.dispose()
    rate = participants / await attempt_span(url)
    return rate, cpu / participants * 1e6, backends / participants * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--webhooks", action="store_true", help="without and with, side by side")
    args = parser.parse_args()
    n = args.participants
    for webhooks in (False, True) if args.webhooks else (False,):
        how = ", webhooks on (outbox only)" if webhooks else ""
        name, url = await create_pg_database()
        try:
            rate, cpu, backends = await measure(url, n, webhooks)
        finally:
            await drop_pg_database(name)
        print(
            f"postgresql{how}: {rate:6,.0f} dials/s, dialer {cpu:5.0f} µs CPU/dial, "
            f"backends {backends:5.0f} µs CPU/dial"
        )
    for webhooks in (False, True) if args.webhooks and not args.skip_sqlite else (False,):
        if args.skip_sqlite:
            break
        how = ", webhooks on (outbox only)" if webhooks else ""
        with tempfile.TemporaryDirectory() as tmp:
            rate, cpu, _ = await measure(f"sqlite:///{Path(tmp) / 'bench.db'}", n, webhooks)
        print(f"sqlite{how}: {rate:6,.0f} dials/s, dialer {cpu:5.0f} µs CPU/dial")


if __name__ == "__main__":
    asyncio.run(main())
