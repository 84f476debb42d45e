"""The dialer's cross-process guarantees, proven with real `outdial dialer` processes.

Work is queued through the API; dialers run as subprocesses against the same PostgreSQL
database and the simulated carrier, whose call-detail records (one JSON line per dial it
received, appended by every process to one shared file) are the ground truth of who was dialed.
Everything below is judged from that file and from the database, never from the dialers' word.

PostgreSQL only: many dialer processes is the PostgreSQL deployment; SQLite runs one."""

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from outdial.calls.models import Call, Participant
from outdial.dialer.models import DialAttempt, DialJob
from tests.conftest import TenantHandle, create_agent, register_number, simulated_outcome
from tests.dialer.conftest import read_cdr

# Multi-process tests run one after another on one xdist worker (make test runs two): each
# starts several outdial processes of its own, and two at once would starve both.
pytestmark = pytest.mark.xdist_group("processes")

FINAL = {"completed", "failed", "canceled"}
REACHED = {"answered", "voicemail"}
RECONCILED = re.compile(r"reconciling (\d+) attempts of a stopped dialer")
MISSED_SLOT = re.compile(r"missed its dial slot")


@pytest.fixture(autouse=True)
def _postgresql_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "multi-process dialing is the PostgreSQL deployment; SQLite supports one dialer"
        )


# --- dialer processes ----------------------------------------------------------------------


@dataclass
class DialerProcess:
    number: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Fleet:
    """Dialer subprocesses of one test; whatever is still running at the end is killed."""

    database_url: str
    cdr_path: Path
    log_dir: Path
    started: list[DialerProcess] = field(default_factory=list)

    def start(self, **settings: Any) -> DialerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTDIAL_")}
        env.update(
            OUTDIAL_DATABASE_URL=self.database_url,
            OUTDIAL_TELEPHONY_PROVIDER="simulated",
            OUTDIAL_SIMULATED_CDR=str(self.cdr_path),
            PYTHONUNBUFFERED="1",
        )
        env.update({f"OUTDIAL_{name.upper()}": str(value) for name, value in settings.items()})
        number = len(self.started)
        log = self.log_dir / f"dialer-{number}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "outdial.cli", "dialer"],
                env=env,
                cwd=self.log_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        dialer = DialerProcess(number, proc, log)
        self.started.append(dialer)
        return dialer

    @property
    def alive(self) -> list[DialerProcess]:
        return [d for d in self.started if d.alive]

    def kill(self, dialer: DialerProcess) -> None:
        dialer.proc.send_signal(signal.SIGKILL)
        dialer.proc.wait(10)

    async def stop(self, dialer: DialerProcess, *, within: float) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL and fail if it takes longer)."""
        dialer.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + within
        while dialer.alive:
            if time.monotonic() > deadline:
                self.kill(dialer)
                raise AssertionError(
                    f"dialer {dialer.number} did not stop within {within} s:\n{self.tail(dialer)}"
                )
            await asyncio.sleep(0.02)
        return dialer.proc.returncode

    def close(self) -> None:
        for dialer in self.started:
            if dialer.alive:
                dialer.proc.kill()
            try:
                dialer.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - nothing more we can do
                pass

    def tail(self, dialer: DialerProcess, lines: int = 40) -> str:
        return "\n".join(dialer.log.read_text(errors="replace").splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(d.log.read_text(errors="replace") for d in self.started if d.log.exists())


@pytest.fixture
def fleet(database_url: str, cdr_path: Path, tmp_path: Path) -> Iterator[Fleet]:
    log_dir = tmp_path / "dialers"
    log_dir.mkdir()
    dialers = Fleet(database_url, cdr_path, log_dir)
    try:
        yield dialers
    finally:
        dialers.close()


# --- helpers -------------------------------------------------------------------------------


async def stats(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, int]:
    response = await client.get("/v1/calls/queue/stats", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for_drain(
    client: httpx.AsyncClient, tenant: TenantHandle, fleet: Fleet, *, within: float
) -> float:
    """Wait until nothing is waiting or active; answers how long it took."""
    started = time.monotonic()
    while True:
        current = await stats(client, tenant)
        if current["waiting"] == 0 and current["active"] == 0:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            tails = "\n\n".join(fleet.tail(d, 15) for d in fleet.alive)
            raise AssertionError(f"queue not drained within {within} s: {current}\n{tails}")
        await asyncio.sleep(0.2)


async def queue_batch(
    client: httpx.AsyncClient, tenant: TenantHandle, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post("/v1/calls/batch", json=body, headers=tenant.headers)
    assert response.status_code == 202, response.text
    return response.json()


async def all_rows(app: FastAPI, model: Any, *where: Any) -> list[Any]:
    async with app.state.sessionmaker() as session:
        return list((await session.scalars(select(model).where(*where))).all())


def parse_at(line: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(line["at"])


def most_in_any_second(instants: list[float]) -> int:
    """The most instants any half-open window [t, t + 1) holds (the busiest starts at one)."""
    instants = sorted(instants)
    best, end = 0, 0
    for start, t in enumerate(instants):
        while end < len(instants) and instants[end] < t + 1.0:
            end += 1
        best = max(best, end - start)
    return best


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at any instant (an end frees its slot first)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, delta in points:
        now += delta
        best = max(best, now)
    return best


# --- 1. chaos ------------------------------------------------------------------------------

CHAOS_SECONDS = 8.0
CHAOS_BATCHES = 3  # of 500 recipients
CHAOS_DIALERS = 3
CHAOS_SETTINGS = {
    "simulated_speed": 40,
    "dialer_lease_seconds": 2,
    "dialer_poll_seconds": 0.05,
    "dialer_shutdown_grace_seconds": 5,
}
BUSY_RETRY = {"max_attempts": 2, "on": ["busy"], "delay_seconds": 0}


async def test_killing_dialers_at_random_never_dials_anyone_twice(
    client, make_tenant, app, fleet, cdr_path
) -> None:
    began = time.monotonic()
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    print(f"\nchaos seed {seed}")
    tenant = await make_tenant(credits=1_000_000, max_concurrency=80, calls_per_second=400)
    caller_ids = [f"+1555888000{i}" for i in range(4)]
    for caller_id in caller_ids:
        await register_number(client, tenant, caller_id)
    agent = await create_agent(client, tenant)
    bodies: list[dict[str, Any]] = []
    for b in range(CHAOS_BATCHES):
        numbers = [f"+1555{b + 1}{i:06d}" for i in range(500)]
        body: dict[str, Any] = {"agent_id": agent["id"], "ring_timeout_seconds": 15}
        if b % 2 == 0:  # per-recipient caller IDs, retried when busy
            body["recipients"] = [
                {"to": n, "from_number": caller_ids[i % len(caller_ids)]}
                for i, n in enumerate(numbers)
            ]
            body["retry"] = BUSY_RETRY
        else:
            body["to"] = numbers
            body["from_number"] = caller_ids[b % len(caller_ids)]
        bodies.append(body)

    for body in bodies[:2]:
        await queue_batch(client, tenant, body)
    for _ in range(CHAOS_DIALERS):
        fleet.start(**CHAOS_SETTINGS)

    # Chaos: SIGKILL a random dialer every 0.5-2 s and start a replacement; meanwhile the
    # remaining batches are queued through the API.
    kills = 0
    late = bodies[2:]
    chaos_ends = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < chaos_ends:
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        if late:
            await queue_batch(client, tenant, late.pop(0))
        victim = rng.choice(fleet.alive)
        fleet.kill(victim)
        kills += 1
        fleet.start(**CHAOS_SETTINGS)
        print(
            f"  {CHAOS_SECONDS - (chaos_ends - time.monotonic()):5.1f} s: killed dialer "
            f"{victim.number}; {await stats(client, tenant)}"
        )
    for body in late:
        await queue_batch(client, tenant, body)
    at_chaos_end = await stats(client, tenant)
    print(f"after {CHAOS_SECONDS:.0f} s of chaos ({kills} kills): {at_chaos_end}")
    assert at_chaos_end["waiting"] + at_chaos_end["active"] > 0, (
        "the queue drained before the chaos ended: make the work bigger"
    )

    # The survivors finish everything: leases of the killed expire and are reconciled.
    drain = await wait_for_drain(client, tenant, fleet, within=120)
    survivors = fleet.alive
    assert len(survivors) == CHAOS_DIALERS
    for dialer in survivors:
        assert await fleet.stop(dialer, within=15) == 0, fleet.tail(dialer)

    cdr = read_cdr(cdr_path)
    participants = await all_rows(app, Participant, Participant.tenant_id == tenant.id)
    jobs = {j.id: j for j in await all_rows(app, DialJob, DialJob.tenant_id == tenant.id)}
    attempts = await all_rows(app, DialAttempt, DialAttempt.tenant_id == tenant.id)
    calls = await all_rows(app, Call, Call.tenant_id == tenant.id)
    retry_of = {c.id: c.retry for c in calls}

    # Everyone is final, and so is every job and every call.
    assert len(participants) == 500 * CHAOS_BATCHES
    assert Counter(p.status for p in participants if p.status not in FINAL) == {}
    assert Counter(j.status for j in jobs.values() if j.status not in FINAL) == {}
    assert [(c.id, c.status) for c in calls if c.status != "completed" or not c.ended_at] == []

    # The carrier received each attempt once, and only attempts the database recorded; every
    # attempt recorded was received (attempts never dialed are withdrawn, not left behind).
    cdr_ids = Counter(line["attempt_id"] for line in cdr)
    assert [a for a, n in cdr_ids.items() if n > 1] == []
    by_id = {a.id: a for a in attempts}
    assert sorted(set(cdr_ids) - set(by_id)) == []
    assert sorted(set(by_id) - set(cdr_ids)) == []
    for line in cdr:
        attempt = by_id[line["attempt_id"]]
        assert (line["to"], line["from"]) == (attempt.to_number, attempt.from_number)

    # No (participant, attempt number) was dialed twice, attempt numbers run 1..n, and nobody
    # was dialed more often than their job allows.
    slots = Counter((a.participant_id, a.attempt_no) for a in attempts)
    assert [s for s, n in slots.items() if n > 1] == []
    attempts_of: dict[str, list[DialAttempt]] = defaultdict(list)
    for attempt in attempts:
        attempts_of[attempt.participant_id].append(attempt)
    dials_to = Counter(line["to"] for line in cdr)
    for p in participants:
        job = jobs[p.job_id]
        mine = sorted(attempts_of[p.id], key=lambda a: a.attempt_no)
        assert [a.attempt_no for a in mine] == list(range(1, len(mine) + 1)), p.id
        assert len(mine) == p.attempts == job.attempt >= 1, p.id
        assert dials_to[p.identity] == len(mine) <= job.max_attempts, p.identity

    # Each attempt ended as the carrier played it, or `lost` (its dialer was killed while the
    # call was live); the participant ends as its last attempt did, retried only as allowed.
    for attempt in attempts:
        assert attempt.status in ("ended", "lost"), attempt.id
        assert attempt.ended_at is not None, attempt.id
        if attempt.status == "lost":
            assert attempt.end_reason == "lost", attempt.id
        else:
            assert attempt.end_reason == simulated_outcome(attempt.to_number), attempt.id
            assert (attempt.answered_at is not None) == (attempt.end_reason in REACHED)
    for p in participants:
        mine = sorted(attempts_of[p.id], key=lambda a: a.attempt_no)
        retry = retry_of[p.call_id]
        retried_on = set(retry["on"]) if retry else set()
        assert all(a.end_reason in retried_on for a in mine[:-1]), p.id
        last = mine[-1]
        if last.end_reason in retried_on:
            assert len(mine) == jobs[p.job_id].max_attempts, p.id
        assert p.end_reason == last.end_reason, p.id
        assert p.status == ("completed" if last.end_reason in REACHED else "failed"), p.id

    lost = sum(1 for a in attempts if a.status == "lost")
    reconciled = sum(int(n) for n in RECONCILED.findall(fleet.logs()))
    withdrawn = reconciled - lost
    assert withdrawn >= 0
    missed_slots = len(MISSED_SLOT.findall(fleet.logs()))
    tracebacks = fleet.logs().count("Traceback")
    retried = sum(1 for a in attempts if a.attempt_no > 1)
    print(
        f"participants {len(participants)}, dials {len(cdr)} (retries {retried}), "
        f"dialers started {len(fleet.started)}, SIGKILLs {kills}; "
        f"orphaned attempts reconciled {reconciled}: lost {lost}, withdrawn and requeued "
        f"{withdrawn}; dials handed back for a missed slot {missed_slots}; "
        f"tracebacks in dialer logs {tracebacks}; drained {drain:.1f} s after the chaos; "
        f"outcomes {dict(Counter(p.end_reason for p in participants))}; "
        f"runtime {time.monotonic() - began:.1f} s"
    )


# --- 2. pacing and caps across processes ---------------------------------------------------


async def test_pacing_and_concurrency_cap_hold_across_processes(
    client, make_tenant, app, fleet, cdr_path
) -> None:
    began = time.monotonic()
    tenant = await make_tenant(credits=10_000, max_concurrency=4, calls_per_second=3)
    caller_ids = ["+15557770001", "+15557770002"]
    for caller_id in caller_ids:
        await register_number(client, tenant, caller_id)
    agent = await create_agent(client, tenant)
    # Answered numbers, talking 10-59 simulated seconds: 0.2-1 s at speed 60.
    numbers = [f"+155577{i:03d}{i % 70:02d}" for i in range(60)]
    await queue_batch(
        client,
        tenant,
        {
            "agent_id": agent["id"],
            "recipients": [
                {"to": n, "from_number": caller_ids[i % 2]} for i, n in enumerate(numbers)
            ],
        },
    )
    for _ in range(3):
        fleet.start(
            simulated_speed=60,
            dialer_lease_seconds=2,
            dialer_poll_seconds=0.05,
        )
    drain = await wait_for_drain(client, tenant, fleet, within=45)
    for dialer in fleet.alive:
        assert await fleet.stop(dialer, within=15) == 0, fleet.tail(dialer)

    cdr = read_cdr(cdr_path)
    assert sorted(line["to"] for line in cdr) == sorted(numbers)
    attempts = {a.id: a for a in await all_rows(app, DialAttempt)}
    assert set(attempts) == {line["attempt_id"] for line in cdr}
    by_dialer = Counter(a.dialer_id for a in attempts.values())
    assert len(by_dialer) >= 2, (
        f"one dialer did all the work; nothing crossed processes: {by_dialer}"
    )

    # Pacing: per caller ID, no one-second window holds more than 3 dials.
    per_caller: dict[str, list[float]] = defaultdict(list)
    for line in cdr:
        per_caller[line["from"]].append(parse_at(line).timestamp())
    busiest = {caller: most_in_any_second(times) for caller, times in per_caller.items()}
    assert set(busiest) == set(caller_ids)
    assert max(busiest.values()) <= 3, busiest

    # The tenant's cap: from the carrier receiving a dial until the call ended, at most 4 at once.
    intervals = [
        (parse_at(line).timestamp(), attempts[line["attempt_id"]].ended_at.timestamp())
        for line in cdr
    ]
    assert all(start < end for start, end in intervals)
    peak = most_at_once(intervals)
    assert peak <= 4, peak
    print(
        f"\n60 calls over 3 dialers {sorted(by_dialer.values())}: busiest second per caller ID "
        f"{busiest}, peak concurrency {peak}, drained in {drain:.1f} s, "
        f"runtime {time.monotonic() - began:.1f} s"
    )


# --- 3. graceful shutdown ------------------------------------------------------------------


async def test_sigterm_lets_live_calls_finish_and_hands_back_the_rest(
    client, make_tenant, app, fleet, cdr_path
) -> None:
    began = time.monotonic()
    grace = 2.0
    # One dial a second from one caller ID, slots reserved 5 s ahead: the dialer claims 5 jobs
    # (its cap) and holds attempts waiting for their slots while the first calls are live.
    tenant = await make_tenant(credits=10_000, max_concurrency=5, calls_per_second=1)
    await register_number(client, tenant, "+15556660000")
    agent = await create_agent(client, tenant)
    # At speed 5: the first call rings 0.6 s and talks 2 s (it ends within the grace); the
    # others talk 11.8 s (hung up when the grace runs out).
    numbers = ["+15556661000"] + [f"+1555666{1049 + 100 * i}" for i in range(5)]
    queued = await queue_batch(client, tenant, {"agent_id": agent["id"], "to": numbers})
    first = fleet.start(
        simulated_speed=5,
        dialer_lease_seconds=8,  # the horizon must stay under 2/3 of a lease (config.py)
        dialer_poll_seconds=0.05,
        dialer_pacing_horizon_seconds=5,
        dialer_shutdown_grace_seconds=grace,
    )

    deadline = time.monotonic() + 20
    while len(read_cdr(cdr_path)) < 2:
        assert time.monotonic() < deadline, fleet.tail(first)
        assert first.alive, fleet.tail(first)
        await asyncio.sleep(0.02)
    async with app.state.sessionmaker() as session:
        pending = list(
            (
                await session.scalars(select(DialAttempt.id).where(DialAttempt.status == "placing"))
            ).all()
        )
    live = {line["attempt_id"]: line["to"] for line in read_cdr(cdr_path)}
    sent = time.monotonic()
    code = await fleet.stop(first, within=grace + 10)
    took = time.monotonic() - sent
    assert code == 0, fleet.tail(first)
    assert took <= grace + 4, f"took {took:.1f} s to stop"

    cdr = read_cdr(cdr_path)
    dialed = {line["attempt_id"]: line["to"] for line in cdr}
    assert len(dialed) >= 2
    assert set(live) <= set(dialed)
    jobs = await all_rows(app, DialJob, DialJob.tenant_id == tenant.id)
    assert [j.id for j in jobs if j.status == "active"] == []
    participants = {p.identity: p for p in await all_rows(app, Participant)}
    attempts = await all_rows(app, DialAttempt)
    # Every call it placed ended (on its own or hung up): completed, as answered.
    assert {a.id for a in attempts} == set(dialed)
    for attempt in attempts:
        assert (attempt.status, attempt.end_reason) == ("ended", "answered"), attempt.id
        if attempt.to_number == numbers[0]:
            assert attempt.talk_seconds == 10  # finished by itself within the grace
        else:
            assert attempt.talk_seconds < 59  # hung up when the grace ran out
        p = participants[attempt.to_number]
        assert (p.status, p.end_reason, p.attempts) == ("completed", "answered", 1)
    # Everything it had not placed is back in the queue, never dialed.
    waiting = [j for j in jobs if j.to_number not in dialed.values()]
    assert len(waiting) == len(numbers) - len(dialed)
    assert [j.id for j in waiting if j.status != "waiting" or j.attempt != 0] == []
    for job in waiting:
        p = participants[job.to_number]
        assert (p.status, p.attempts) == ("queued", 0)
    withdrawn = [a for a in pending if a not in dialed]
    print(
        f"\nSIGTERM with {len(live)} live and {len(withdrawn)} attempts waiting for their slot: "
        f"stopped in {took:.1f} s (grace {grace} s); {len(dialed)} dialed, "
        f"{len(waiting)} handed back"
    )
    assert withdrawn, "no attempt was waiting for its dial slot at SIGTERM"

    # Another dialer finishes the rest; nobody is dialed twice.
    fleet.start(simulated_speed=100, dialer_lease_seconds=2, dialer_poll_seconds=0.05)
    await wait_for_drain(client, tenant, fleet, within=30)
    cdr = read_cdr(cdr_path)
    assert sorted(line["to"] for line in cdr) == sorted(numbers)
    assert len({line["attempt_id"] for line in cdr}) == len(numbers)
    call = (await client.get(f"/v1/calls/{queued['id']}", headers=tenant.headers)).json()
    assert call["status"] == "completed"
    assert {(p["status"], p["attempts"]) for p in call["participants"]} == {("completed", 1)}
    print(f"second dialer finished the rest; runtime {time.monotonic() - began:.1f} s")


# --- 4. a dialer frozen past its lease -----------------------------------------------------


async def test_a_dialer_frozen_past_its_lease_dials_nothing_it_lost_when_it_thaws(
    client, make_tenant, app, fleet, cdr_path
) -> None:
    began = time.monotonic()
    tenant = await make_tenant(credits=10_000, max_concurrency=30, calls_per_second=4)
    await register_number(client, tenant, "+15554440000")
    agent = await create_agent(client, tenant)
    numbers = [f"+1555444{1000 + i}" for i in range(24)]
    await queue_batch(client, tenant, {"agent_id": agent["id"], "to": numbers})
    settings = {
        "simulated_speed": 20,
        "dialer_lease_seconds": 2,
        "dialer_poll_seconds": 0.05,
        "dialer_pacing_horizon_seconds": 1.2,  # under 2/3 of the lease (config.py)
    }
    frozen = fleet.start(**settings)
    mine = DialAttempt.dialer_id.contains(f":{frozen.proc.pid}:")

    async def live_and_pending() -> tuple[set[str], set[str]]:
        """The frozen dialer's calls the carrier has, and its attempts waiting for a slot."""
        dialed = {line["attempt_id"] for line in read_cdr(cdr_path)}
        unsettled = {
            a.id for a in await all_rows(app, DialAttempt, mine, DialAttempt.ended_at.is_(None))
        }
        return unsettled & dialed, unsettled - dialed

    async def in_a_transaction() -> bool:
        """Whether any connection but the test's own is inside a statement or transaction."""
        async with app.state.sessionmaker() as session:
            busy = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            )
        return bool(busy)

    # Freeze it (SIGSTOP) while it has live calls and attempts waiting for their slots, and
    # between transactions: frozen inside one, the row locks it holds would keep its jobs from
    # being taken over (so nothing would be withdrawn from it: a different, weaker scenario).
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, fleet.tail(frozen)
        if all(await live_and_pending()):
            frozen.proc.send_signal(signal.SIGSTOP)
            frozen_at = datetime.now(UTC)
            await asyncio.sleep(0.05)
            if not await in_a_transaction():
                live, pending = await live_and_pending()
                if live and pending:
                    break
            frozen.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(random.uniform(0.01, 0.05))

    # Frozen for twice its lease: another dialer takes its jobs over, withdraws the attempts it
    # had not placed (their jobs are dialed afresh) and ends its live calls `lost`.
    # Thawed once the other has reconciled all of it (a fixed wait was too short for a loaded
    # machine, where starting the other dialer alone can take seconds).
    try:
        other = fleet.start(**settings)
        deadline = time.monotonic() + 60
        while sum(int(n) for n in RECONCILED.findall(other.log.read_text())) < len(live) + len(
            pending
        ):
            assert time.monotonic() < deadline, fleet.tail(other)
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # frozen a little longer: its leases are long gone
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    await wait_for_drain(client, tenant, fleet, within=30)
    for dialer in fleet.alive:
        assert await fleet.stop(dialer, within=15) == 0, fleet.tail(dialer)

    cdr = read_cdr(cdr_path)
    cdr_ids = {line["attempt_id"] for line in cdr}
    attempts = {a.id: a for a in await all_rows(app, DialAttempt)}
    assert sorted(line["to"] for line in cdr) == sorted(numbers)  # each number dialed once
    assert set(attempts) == cdr_ids
    # What it had not placed was withdrawn, and on thawing it found those slots long past and
    # handed them back instead of dialing them.
    assert pending.isdisjoint(cdr_ids)
    assert len(MISSED_SLOT.findall(frozen.log.read_text())) >= len(pending)
    # Its live calls were ended `lost` (fate unknown) by the other dialer, and stay so: the
    # events it reported for them after thawing settled nothing twice.
    for a in live:
        assert (attempts[a].status, attempts[a].end_reason) == ("lost", "lost")
        assert attempts[a].ended_at > frozen_at
    reconciled = sum(int(n) for n in RECONCILED.findall(other.log.read_text()))
    assert reconciled == len(live) + len(pending)
    participants = await all_rows(app, Participant, Participant.tenant_id == tenant.id)
    assert {p.status for p in participants} <= FINAL
    assert Counter(p.end_reason for p in participants)["lost"] == len(live)
    # Nothing was settled twice: every hold was released exactly once.
    balance = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert balance["held"] == 0
    print(
        f"\nfrozen for 4 s with {len(live)} live calls and {len(pending)} attempts not yet "
        f"placed: those withdrawn and dialed afresh by the other dialer, none dialed by it on "
        f"thawing; the live ones ended lost; runtime {time.monotonic() - began:.1f} s"
    )
