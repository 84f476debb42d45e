"""Benchmark: webhook deliveries per second by one delivery process, and the lag from the
emitting commit to the receiver's 2xx.

A receiver process on loopback answers 200 at once (uvicorn, httptools, uvloop, a bare ASGI
app) and notes when it answered each event. Then, on PostgreSQL and on SQLite:

- throughput: with one real `outdial webhooks` process started and idle, N events (4 per
  call, each call's in order) are committed to the outbox in one transaction and it drains
  them; rate = N / (first answer → last answer), and its CPU time per delivery (start-up
  left out: a loaded machine slows the rate far more than the CPU time);
- lag: with `outdial webhooks` running, events are committed at a steady rate (1,000/s,
  then 250/s; 10 per transaction, as a dialer settling a batch would) for some seconds, as
  status changes of as many live calls as the rate (each call's next one a second later);
  lag = the receiver's answer minus the emitting transaction's commit, p50 / p99.

Yardsticks in the same run, against the same receiver, no database: the worker's own HTTP
client and send path (aiohttp, through `DeliveryWorker._post`, signing included) one at a
time and at the per-endpoint concurrency, and httpx (the client it replaced) the same way,
to tell how much of the rate the HTTP client bounds.

Run: `.venv/bin/python bench/webhooks.py [--events N] [--lag-seconds S] [--rates R,R]
[--skip-sqlite] [--skip-postgresql]`.
Goals (issue 12): ≥ 2,000 deliveries/s per process; p99 lag ≤ 1 s at 1,000 events/s.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from scratch_db import create_pg_database, drop_pg_database

from outdial import migrate
from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker, utcnow
from outdial.signing import signature_headers
from outdial.tenants import service as tenants
from outdial.webhooks.deliveries import Claimed
from outdial.webhooks.models import WebhookEndpoint
from outdial.webhooks.outbox import EventType, NewEvent, emit_events
from outdial.webhooks.worker import DeliveryWorker

EVENTS_PER_CALL = 4
WORKER_LOG = Path(tempfile.gettempdir()) / "outdial-bench-webhooks.log"
"""Where the delivery processes' logs go (a failed run says why there)."""
PER_TRANSACTION = 10
EMITTERS = 8
"""Transactions emitting at once (as a dialer's concurrent settles would)."""
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# A participant as GET /v1/calls/{id} shows it, plus its call_id: a realistic body size.
PARTICIPANT = {
    "id": "participant_0193f0c2a1b4000001c9d2f3a4b5",
    "transport": "pstn",
    "identity": "+15559990001",
    "from_number": "+15559990000",
    "status": "in_progress",
    "end_reason": None,
    "attempts": 1,
    "telephony_leg_id": "leg_0193f0c2a1b4000001c9d2f3a4b5",
    "job_id": "job_0193f0c2a1b4000001c9d2f3a4b5",
    "metadata": {"customer_id": "cus_123"},
    "duration_seconds": None,
    "cost": 0.0,
    "created_at": "2026-11-30T12:00:00Z",
    "dialed_at": "2026-11-30T12:00:01Z",
    "answered_at": "2026-11-30T12:00:09Z",
    "ended_at": None,
}


# --- the receiver (its own process) ----------------------------------------------------


class Receiver:
    """Answers every POST 200 at once, noting when it answered each event (`data.n`)."""

    def __init__(self) -> None:
        self.answered: dict[int, list[float]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reply = b"ok"
        if scope["method"] == "POST":
            # The dialer benchmark's events (real ones, no `n`) are answered, not noted.
            n = json.loads(body)["data"].get("n")
            if n is not None:
                self.answered.setdefault(n, []).append(time.time())
        elif scope["path"] == "/dump":
            reply = json.dumps(self.answered).encode()
        elif scope["path"] == "/reset":
            self.answered = {}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": reply})


def serve_receiver(port: int) -> None:
    import uvicorn

    uvicorn.run(
        Receiver(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "receiver", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/reset", timeout=1)
            return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the receiver did not start")


def reset(base: str) -> None:
    httpx.get(f"{base}/reset", timeout=10)


def answered(base: str) -> dict[int, list[float]]:
    return {int(n): times for n, times in httpx.get(f"{base}/dump", timeout=60).json().items()}


# --- yardsticks: the same receiver, no database -----------------------------------------


def payloads(count: int) -> list[str]:
    return [
        json.dumps(
            {
                "type": "call.participant.updated",
                "timestamp": "2026-11-30T12:00:09.000000Z",
                "data": {**PARTICIPANT, "call_id": f"call_{n}", "n": n},
            },
            separators=(",", ":"),
        )
        for n in range(count)
    ]


async def worker_client_rate(url: str, count: int, concurrency: int) -> float:
    """The delivery worker's own client and send path (aiohttp, signing included)."""
    settings = Settings(webhook_allow_private_urls=True, webhook_concurrency=concurrency)
    worker = DeliveryWorker(None, settings)  # type: ignore[arg-type]  # no database here
    bodies = payloads(count)
    gate = asyncio.Semaphore(concurrency)
    async with worker._client() as client:
        worker._http = client

        async def send(n: int) -> None:
            async with gate:
                claimed = Claimed(
                    n, 1, "wh_bench", url, SECRET, f"evt_{n}", bodies[n], False, utcnow()
                )
                status, _ = await worker._post(claimed)
                assert status == 200

        started = time.perf_counter()
        await asyncio.gather(*(send(n) for n in range(count)))
        return count / (time.perf_counter() - started)


async def httpx_rate(url: str, count: int, concurrency: int) -> float:
    """httpx, the client the worker first used, signing included."""
    bodies = payloads(count)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def send(n: int) -> None:
            async with gate:
                headers = signature_headers(SECRET, msg_id=f"evt_{n}", payload=bodies[n])
                headers["content-type"] = "application/json"
                answer = await client.post(url, content=bodies[n].encode(), headers=headers)
                assert answer.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(send(n) for n in range(count)))
        return count / (time.perf_counter() - started)


# --- outdial ---------------------------------------------------------------------------


async def seed(url: str, receiver_url: str) -> str:
    """A tenant with one endpoint pointed at the receiver; its id."""
    await migrate.upgrade(url)
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session, session.begin():
        tenant, _ = await tenants.create_tenant(
            session, name="bench", max_concurrency=50, calls_per_second=10
        )
        now = utcnow()
        session.add(
            WebhookEndpoint(
                id="wh_bench",
                tenant_id=tenant.id,
                url=receiver_url,
                events=["*"],
                secret=SECRET,
                status="enabled",
                created_at=now,
                updated_at=now,
            )
        )
    await engine.dispose()
    return tenant.id


def events_for(tenant_id: str, first: int, count: int, calls: int | None = None) -> list[NewEvent]:
    """Events `first`… as a dialer would emit them: with `calls`, event n is the next
    status change of call n % calls (a live call's changes come seconds apart); without,
    each run of 4 events is one call's (a backlog)."""
    now = utcnow()

    def key(n: int) -> str:
        return f"call_{n % calls}" if calls else f"call_{n // EVENTS_PER_CALL}"

    return [
        NewEvent(
            tenant_id=tenant_id,
            type=EventType.CALL_PARTICIPANT_UPDATED,
            data={**PARTICIPANT, "call_id": key(n), "n": n},
            ordering_key=key(n),
            occurred_at=now,
        )
        for n in range(first, first + count)
    ]


def start_worker(url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OUTDIAL_DATABASE_URL": url, "OUTDIAL_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    with open(WORKER_LOG, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "outdial.cli", "webhooks"], env=env, stdout=log, stderr=log
        )


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


async def wait_for_answers(base: str, count: int, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while len(answered(base)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("not every event arrived in time")
        if worker.poll() is not None:
            raise RuntimeError("the delivery process died")
        await asyncio.sleep(0.5)


async def settled(worker: subprocess.Popen[bytes]) -> float:
    """Wait until the process has started (its CPU time stops growing: its imports are done
    and it polls an empty outbox); answer the CPU time it has used so far."""
    deadline = time.monotonic() + 120
    used = process_cpu(worker.pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        before, used = used, process_cpu(worker.pid)
        if used - before < 0.05:
            return used
    raise RuntimeError("the delivery process did not settle")


async def throughput(url: str, base: str, tenant_id: str, count: int) -> tuple[float, float]:
    """Deliveries per second draining a backlog of `count` committed at once, and the
    delivery process's CPU seconds per delivery (its start-up left out)."""
    reset(base)
    worker = start_worker(url)
    try:
        idle = await settled(worker)
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as session, session.begin():
            for first in range(0, count, 500):
                await emit_events(session, events_for(tenant_id, first, min(500, count - first)))
        await engine.dispose()
        await wait_for_answers(base, count, worker)
        cpu = process_cpu(worker.pid) - idle
    finally:
        stop(worker)
    times = [t for answers in answered(base).values() for t in answers]
    return count / (max(times) - min(times)), cpu / count


async def lag(url: str, base: str, tenant_id: str, rate: int, seconds: float) -> list[float]:
    """Lags (s) of events committed at `rate` per second for `seconds`, the first second
    (warm-up) left out."""
    reset(base)
    worker = start_worker(url)
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    committed: dict[int, float] = {}
    gate = asyncio.Semaphore(EMITTERS)

    async def commit(first: int) -> None:
        async with gate, sessionmaker() as session, session.begin():
            await emit_events(session, events_for(tenant_id, first, PER_TRANSACTION, calls=rate))
        now = time.time()
        for k in range(first, first + PER_TRANSACTION):
            committed[k] = now

    try:
        idle = await settled(worker)
        interval = PER_TRANSACTION / rate
        started = time.monotonic()
        first = 10_000_000  # apart from the throughput run's numbers
        commits = []
        for tick in range(int(seconds * rate / PER_TRANSACTION)):
            await asyncio.sleep(max(0.0, started + tick * interval - time.monotonic()))
            commits.append(asyncio.create_task(commit(first + tick * PER_TRANSACTION)))
        await asyncio.gather(*commits)
        achieved = len(committed) / (time.monotonic() - started)
        await wait_for_answers(base, len(committed), worker)
        cpu = process_cpu(worker.pid) - idle
    finally:
        stop(worker)
        await engine.dispose()
    print(
        f"    emitted {len(committed)} events at {achieved:,.0f}/s; the delivery process used "
        f"{cpu / len(committed) * 1e6:,.0f} µs CPU per delivery",
        flush=True,
    )
    arrivals = answered(base)
    skip = rate  # the first second
    return sorted(min(arrivals[k]) - committed[k] for k in sorted(committed)[skip:])


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


async def run_backend(
    label: str, url: str, base: str, receiver_url: str, args: argparse.Namespace
) -> None:
    tenant_id = await seed(url, receiver_url)
    rate, cpu = await throughput(url, base, tenant_id, args.events)
    print(
        f"{label}: throughput, 1 `outdial webhooks` process: {rate:,.0f} deliveries/s, "
        f"{cpu * 1e6:,.0f} µs CPU per delivery",
        flush=True,
    )
    for rate in args.rates:
        lags = await lag(url, base, tenant_id, rate, args.lag_seconds)
        p50, p99 = statistics.median(lags) * 1000, percentile(lags, 0.99) * 1000
        print(
            f"{label}: lag commit → 2xx at {rate:,}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
            f"max {lags[-1] * 1000:.0f} ms",
            flush=True,
        )


async def main(args: argparse.Namespace) -> None:
    receiver, base = start_receiver()
    receiver_url = f"{base}/hooks"
    cap = Settings().webhook_endpoint_concurrency
    try:
        for concurrency in (1, cap):
            rate = await worker_client_rate(receiver_url, args.events, concurrency)
            print(f"yardstick: the worker's client (aiohttp), {concurrency} at once: {rate:,.0f}/s")
            rate = await httpx_rate(receiver_url, min(args.events, 3000), concurrency)
            print(f"yardstick: httpx, {concurrency} at once: {rate:,.0f}/s", flush=True)
        if not args.skip_postgresql:
            name, url = await create_pg_database()
            try:
                await run_backend("PostgreSQL", url, base, receiver_url, args)
            finally:
                await drop_pg_database(name)
        if not args.skip_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                await run_backend("SQLite", url, base, receiver_url, args)
    finally:
        receiver.terminate()
        receiver.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receiver":
        serve_receiver(int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--rates",
        type=lambda text: [int(r) for r in text.split(",")],
        default=[1_000, 250],
        help="events/s of the lag runs, comma-separated [1000,250]",
    )
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgresql", action="store_true")
    import uvloop  # as `outdial webhooks` runs, so the yardsticks run alike

    uvloop.run(main(parser.parse_args()))
