"""Benchmark: from a batch's 202 to the carrier hearing of its dial, on an idle dialer.

Sends single-recipient batches one at a time (a pause between them, so each finds the dialer
idle) and reads, from the simulated carrier's call-detail records, when each dial reached
the carrier. Measured on the embedded default (`outdial serve` on SQLite: the dialer is woken
in-process when the request commits) and on PostgreSQL (`outdial api` and `outdial dialer`
processes: woken by LISTEN/NOTIFY). Prints p50 and p99 of (dial received - 202 received).

Run: `.venv/bin/python bench/first_dial.py [--calls N]`. Goals (issue 15): p50 ≤ 20 ms,
p99 ≤ 100 ms on both; idle dialers poll the database at most once a second.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
from batch_api import free_port, outdial
from scratch_db import create_pg_database, drop_pg_database

OUTDIAL = [sys.executable, "-m", "outdial.cli"]
CALLER_ID = "+15559990000"


@contextmanager
def processes(env: dict[str, str], *commands: list[str]):
    started = [
        subprocess.Popen(
            [*OUTDIAL, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for command in commands
    ]
    try:
        yield
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(30)


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def dial_times(cdr: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    for line in cdr.read_text().splitlines():
        record = json.loads(line)
        if "kind" not in record:  # a dial line (media lines carry a kind)
            times[record["to"]] = datetime.fromisoformat(record["at"]).timestamp()
    return times


async def measure(env: dict[str, str], url: str, cdr: Path, calls: int) -> list[float]:
    key = json.loads(outdial(env, "tenant", "create", "--name", "bench", "--credits", "1000"))[
        "api_key"
    ]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        await client.post("/v1/numbers", json={"phone_number": CALLER_ID})
        agent = (await client.post("/v1/agents", json={"name": "bench"})).json()["id"]
        answered: dict[str, float] = {}
        for n in range(calls):
            number = f"+1555123{n:04d}"
            response = await client.post(
                "/v1/calls/batch", json={"agent_id": agent, "to": [number]}
            )
            answered[number] = time.time()
            assert response.status_code == 202, response.text
            await asyncio.sleep(0.15)
    for _ in range(100):  # the last dials, for up to 10 s
        if len(dialed := dial_times(cdr)) == calls:
            break
        await asyncio.sleep(0.1)
    return [(dialed[n] - t) * 1000 for n, t in answered.items() if n in dialed]


def report(name: str, latencies: list[float], calls: int) -> None:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{name}: {len(ordered)}/{calls} dialed; 202 → dial p50 {statistics.median(ordered):6.1f}"
        f" ms, p99 {p99:6.1f} ms, max {ordered[-1]:6.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
    with tempfile.TemporaryDirectory() as tmp:
        cdr = Path(tmp) / "sqlite.cdr"
        port = free_port()
        env = {
            **base,
            "OUTDIAL_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "OUTDIAL_SIMULATED_CDR": str(cdr),
            "OUTDIAL_SIMULATED_SPEED": "1000",
        }
        outdial(env, "migrate")
        with processes(env, ["serve", "--port", str(port)]):
            wait_for(f"http://127.0.0.1:{port}")
            latencies = await measure(env, f"http://127.0.0.1:{port}", cdr, args.calls)
        report("sqlite, outdial serve      ", latencies, args.calls)

        name, url = await create_pg_database()
        try:
            cdr = Path(tmp) / "postgresql.cdr"
            port = free_port()
            env = {
                **base,
                "OUTDIAL_DATABASE_URL": url,
                "OUTDIAL_SIMULATED_CDR": str(cdr),
                "OUTDIAL_SIMULATED_SPEED": "1000",
            }
            outdial(env, "migrate")
            with processes(env, ["api", "--port", str(port)], ["dialer"]):
                wait_for(f"http://127.0.0.1:{port}")
                latencies = await measure(env, f"http://127.0.0.1:{port}", cdr, args.calls)
            report("postgresql, api + dialer   ", latencies, args.calls)
        finally:
            await drop_pg_database(name)


if __name__ == "__main__":
    asyncio.run(main())
