"""A delivery process (`outdial webhooks`, a real subprocess) killed with SIGKILL mid-run while
the receiver answers 500: every committed event still arrives, duplicates carry the same
webhook-id and body, nothing is sent for a transaction that rolled back."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import select

from outdial.webhooks.models import WebhookDelivery
from outdial.webhooks.outbox import emit_events
from outdial.webhooks.worker import NICENESS
from tests.webhooks.conftest import Emit, Subscribe, event
from tests.webhooks.receiver import Received, Receiver

FAILING_FOR = 1.5
"""Seconds the receiver answers 500 from the first request on."""


def start_worker(database_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OUTDIAL_DATABASE_URL": database_url,
        "OUTDIAL_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "OUTDIAL_WEBHOOK_RETRY_SCHEDULE": "[" + ",".join(["0.25"] * 30) + "]",
        "OUTDIAL_WEBHOOK_TIMEOUT_SECONDS": "1",  # leases of 2 s
        "OUTDIAL_WEBHOOK_POLL_SECONDS": "0.02",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "outdial.cli", "webhooks"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigkill_mid_run_loses_nothing(
    app: FastAPI,
    database_url: str,
    tenant,
    receiver: Receiver,
    subscribe: Subscribe,
    emit: Emit,
    tmp_path: Path,
) -> None:
    await subscribe(tenant, receiver)
    started: list[float] = []

    def answer(request: Received) -> int:
        started[:] = started or [request.at]
        return 500 if request.at - started[0] < FAILING_FOR else 200

    receiver.answer = answer
    receiver.delay = 0.02  # so that some sends are in flight when the process dies
    committed = 0
    for _ in range(8):
        await emit(
            *(event(tenant, f"call_{n % 10}", n=n) for n in range(committed, committed + 10))
        )
        committed += 10
    async with app.state.sessionmaker() as session:
        await session.begin()
        await emit_events(session, [event(tenant, "call_0", n=-1, rolled_back=True)])
        await session.rollback()

    log = tmp_path / "webhooks.log"
    first = start_worker(database_url, log)
    try:
        await wait_until(lambda: len(receiver.received) >= 40, 30, "40 requests")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    at_kill = len(receiver.received)
    await emit(*(event(tenant, f"call_{n % 10}", n=n) for n in range(committed, committed + 30)))
    committed += 30

    second = start_worker(database_url, log)
    try:

        def all_acknowledged() -> bool:
            return {r.event["data"]["n"] for r in receiver.received if r.status == 200} >= set(
                range(committed)
            )

        await wait_until(all_acknowledged, 60, f"all {committed} events answered 200")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    assert second.returncode == 0, log.read_text()

    assert at_kill < len(receiver.received)
    assert any(r.status == 500 for r in receiver.received)
    assert all(r.verified for r in receiver.received)
    ids_of: dict[int, set[str]] = defaultdict(set)
    bodies_of: dict[str, set[bytes]] = defaultdict(set)
    for r in receiver.received:
        ids_of[r.event["data"]["n"]].add(r.webhook_id)
        bodies_of[r.webhook_id].add(r.body)
    assert sorted(ids_of) == list(range(committed))  # nothing from the rolled-back one
    assert all(len(ids) == 1 for ids in ids_of.values())  # a resend has the same webhook-id
    assert all(len(bodies) == 1 for bodies in bodies_of.values())  # and the same bytes
    async with app.state.sessionmaker() as session:
        statuses = set(await session.scalars(select(WebhookDelivery.status)))
    assert statuses == {"delivered"}


async def test_the_delivery_process_runs_below_the_priority_it_was_started_with(
    app: FastAPI, database_url: str, tmp_path: Path
) -> None:
    """Delivery is background work: a dialer beside it keeps the CPU (issue 12's speed goal)."""
    expected = min(os.getpriority(os.PRIO_PROCESS, 0) + NICENESS, 19)
    worker = start_worker(database_url, tmp_path / "worker.log")
    try:
        # It lowers its priority once it has started (after its imports, which take a while).
        await wait_until(
            lambda: os.getpriority(os.PRIO_PROCESS, worker.pid) == expected,
            within=60,
            what="the delivery process to lower its priority",
        )
    finally:
        worker.terminate()
        worker.wait(30)
