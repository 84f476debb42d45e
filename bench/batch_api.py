"""Benchmark: POST /v1/calls/batch with 500 recipients, repeatedly, through a real HTTP server.

Starts `outdial api` (uvicorn, one process) on a fresh SQLite file and on a fresh PostgreSQL
database, then sends batches one after another from one client and prints p50/p99 latency and
recipients queued per second. Yardstick in the same run, on the same PostgreSQL server:
pgqueuer enqueueing the same number of no-op jobs, 500 per call (one `enqueue` of 500, as one
batch is 500 recipients), one after another from one client: jobs per second.

Run: `.venv/bin/python bench/batch_api.py [--batches N]` (pgqueuer from
`pip install -e '.[bench]'`). Targets: p50 <= 25 ms for 500 recipients (issue 2); recipients
per second >= 0.75 x pgqueuer's enqueue rate (issue 15).
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from scratch_db import create_pg_database, drop_pg_database

RECIPIENTS = 500
OUTDIAL = [sys.executable, "-m", "outdial.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outdial(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [*OUTDIAL, *args], env=env, check=True, capture_output=True, text=True
    ).stdout


@contextmanager
def server(env: dict[str, str], port: int):
    proc = subprocess.Popen(
        [*OUTDIAL, "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def run(database_url: str, batches: int, warmup: int) -> dict[str, float]:
    env = {**os.environ, "OUTDIAL_DATABASE_URL": database_url}
    outdial(env, "migrate")
    tenant = json.loads(outdial(env, "tenant", "create", "--name", "bench", "--credits", "1e9"))
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    with server(env, free_port()) as base, httpx.Client(base_url=base, headers=headers) as http:
        http.post("/v1/numbers", json={"phone_number": "+15550000000"}).raise_for_status()
        agent = http.post("/v1/agents", json={"name": "bench", "rate_per_minute": 0.1})
        agent_id = agent.raise_for_status().json()["id"]
        latencies = []
        started = time.perf_counter()
        for i in range(warmup + batches):
            if i == warmup:
                started = time.perf_counter()
            to = [f"+1555{(i * RECIPIENTS + n) % 10_000_000:07d}" for n in range(RECIPIENTS)]
            body = {"agent_id": agent_id, "to": to, "variables": {"campaign": "bench"}}
            t0 = time.perf_counter()
            response = http.post("/v1/calls/batch", json=body)
            elapsed = time.perf_counter() - t0
            assert response.status_code == 202, response.text
            if i >= warmup:
                latencies.append(elapsed)
        total = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "recipients_per_s": batches * RECIPIENTS / total,
    }


async def pgqueuer_enqueue_rate(url: str, batches: int, warmup: int) -> float:
    """pgqueuer queueing `batches` x 500 no-op jobs, one call of 500 at a time: jobs/s."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        names, payloads, priorities = ["noop"] * RECIPIENTS, [None] * RECIPIENTS, [0] * RECIPIENTS
        started = time.perf_counter()
        for i in range(warmup + batches):
            if i == warmup:
                started = time.perf_counter()
            await queries.enqueue(names, payloads, priorities)
        return batches * RECIPIENTS / (time.perf_counter() - started)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    print(f"{RECIPIENTS} recipients per batch, {args.batches} batches, one client, one server")
    name, url = asyncio.run(create_pg_database())
    try:
        yardstick = asyncio.run(pgqueuer_enqueue_rate(url, args.batches, args.warmup))
    finally:
        asyncio.run(drop_pg_database(name))
    print(f"yardstick: pgqueuer enqueue, 500 jobs a call: {yardstick:9,.0f} jobs/s")
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            figures = run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.batches, args.warmup)
        print_figures("sqlite", figures, yardstick)
    if args.backend in ("postgresql", "both"):
        name, url = asyncio.run(create_pg_database())
        try:
            print_figures("postgresql", run(url, args.batches, args.warmup), yardstick)
        finally:
            asyncio.run(drop_pg_database(name))


def print_figures(backend: str, f: dict[str, float], yardstick: float) -> None:
    print(
        f"{backend:>10}: p50 {f['p50_ms']:6.1f} ms   p99 {f['p99_ms']:6.1f} ms   "
        f"{f['recipients_per_s']:9,.0f} recipients/s = "
        f"{f['recipients_per_s'] / yardstick:.2f} x pgqueuer's enqueue"
    )


if __name__ == "__main__":
    main()
