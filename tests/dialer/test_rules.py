"""The dialing rules of API.md, in-process: fairness between tenants, calling windows, ending a
call that is live, and reconciliation after a dialer dies. The simulated carrier's CDR is the
ground truth of who was dialed."""

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from outdial.calls.schemas import CallingWindow
from outdial.config import Settings
from outdial.db import utcnow
from outdial.dialer import claim, outcomes
from outdial.dialer.attempts import (
    NewAttempt,
    mark_answered,
    mark_placed,
    new_attempt_ids,
    start_attempts,
)
from outdial.dialer.claim import TenantLimits
from outdial.dialer.models import DialAttempt, DialJob
from outdial.dialer.windows import next_allowed_at
from outdial.dialer.worker import Dialer
from outdial.telephony.base import CallEvent, DialRequest
from outdial.telephony.simulated import SimulatedProvider
from tests.conftest import MakeTenant, TenantHandle, create_agent, register_number
from tests.dialer.conftest import queue_drained, read_cdr, wait_until

KATHMANDU = "Asia/Kathmandu"  # UTC+05:45, no DST: wall-clock arithmetic below is exact


async def post_batch(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    agent: dict[str, Any],
    numbers: list[str],
    **body: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": numbers, **body},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    return response.json()


async def get_call(client: httpx.AsyncClient, tenant: TenantHandle, call_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def stats(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, int]:
    response = await client.get("/v1/calls/queue/stats", headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def held(client: httpx.AsyncClient, tenant: TenantHandle) -> float:
    return (await client.get("/v1/billing/balance", headers=tenant.headers)).json()["held"]


async def rows(app: FastAPI, stmt: Any) -> list[Any]:
    async with app.state.sessionmaker() as session:
        return list((await session.execute(stmt)).all())


async def new_tenant(
    client: httpx.AsyncClient, make_tenant: MakeTenant, caller_id: str, **limits: Any
) -> tuple[TenantHandle, dict[str, Any]]:
    handle = await make_tenant(**limits)
    await register_number(client, handle, caller_id)
    return handle, await create_agent(client, handle)


# --- fairness --------------------------------------------------------------------------------


async def test_a_small_batch_is_not_starved_by_another_tenants_backlog(
    client, make_tenant, running_dialer, cdr_path, app
) -> None:
    cap = 5
    big, big_agent = await new_tenant(
        client, make_tenant, "+15559990000", max_concurrency=cap, calls_per_second=100
    )
    small, small_agent = await new_tenant(client, make_tenant, "+15559990100", calls_per_second=50)
    backlog = [f"+1555{2_000_000 + n}" for n in range(3000)]
    for start in range(0, len(backlog), 500):
        await post_batch(client, big, big_agent, backlog[start : start + 500])
    assert (await stats(client, big))["waiting"] == 3000

    async with running_dialer(simulated_speed=100.0):
        # The dialer is busy with the backlog, at its tenant's cap.
        await wait_until(lambda: _cdr_has(cdr_path, 2 * cap))
        queued_at = utcnow()
        big_dials_before = len(read_cdr(cdr_path))
        small_numbers = [f"+1555888000{n}" for n in range(5)]
        small_call = await post_batch(client, small, small_agent, small_numbers)

        async def small_all_dialed() -> bool:
            call = await get_call(client, small, small_call["id"])
            return all(p["dialed_at"] for p in call["participants"])

        await wait_until(small_all_dialed, within=5)
        call = await get_call(client, small, small_call["id"])
        last_claim = max(datetime.fromisoformat(p["dialed_at"]) for p in call["participants"])
        big_stats = await stats(client, big)

        async def small_all_in_cdr() -> bool:
            return {line["to"] for line in read_cdr(cdr_path)} >= set(small_numbers)

        await wait_until(small_all_in_cdr, within=5)

    # Claimed (dialed_at is set when the attempt is committed) within a round or two...
    assert last_claim - queued_at < timedelta(seconds=1)
    big_claims_meanwhile = [
        a
        for (a,) in await rows(
            app,
            select(DialAttempt.created_at).where(
                DialAttempt.tenant_id == big.id,
                DialAttempt.created_at > queued_at,
                DialAttempt.created_at <= last_claim,
            ),
        )
    ]
    assert len(big_claims_meanwhile) <= 3 * cap
    # ...while the backlog has barely started to drain.
    assert big_stats["waiting"] >= 2900
    cdr = read_cdr(cdr_path)
    small_lines = [i for i, line in enumerate(cdr) if line["to"] in small_numbers]
    assert len(small_lines) == 5
    assert max(small_lines) < big_dials_before + 5 + 3 * cap
    # And the backlog's tenant never had more than `cap` calls in flight at once.
    intervals = await rows(
        app,
        select(DialAttempt.created_at, DialAttempt.ended_at).where(DialAttempt.tenant_id == big.id),
    )
    assert _max_overlap(intervals) <= cap


def _cdr_has(path: Path, count: int) -> Any:
    async def check() -> bool:
        return len(read_cdr(path)) >= count

    return check()


def _max_overlap(intervals: list[tuple[datetime, datetime | None]]) -> int:
    far = datetime.max.replace(tzinfo=UTC)
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end or far, -1) for _, end in intervals],
        key=lambda edge: (edge[0], edge[1]),
    )
    live = peak = 0
    for _, delta in edges:
        live += delta
        peak = max(peak, live)
    return peak


# --- calling windows -------------------------------------------------------------------------


def _hhmm(local: datetime) -> str:
    return local.strftime("%H:%M")


def _closed_window(case: str, now: datetime) -> tuple[dict[str, Any], datetime]:
    """A window closed at `now` in Kathmandu, and (independently of windows.py) its opening."""
    zone = ZoneInfo(KATHMANDU)
    local = now.astimezone(zone).replace(second=0, microsecond=0)
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    if case == "later_today":
        opens = local + timedelta(hours=2)
        window = {"start": _hhmm(opens), "end": _hhmm(local + timedelta(hours=4))}
    else:  # open at this hour, but not on the day the current window would have started
        started = local - timedelta(hours=1)
        window = {
            "start": _hhmm(started),
            "end": _hhmm(local + timedelta(hours=1)),
            "days": [d for i, d in enumerate(days) if i != started.weekday()],
        }
        opens = started + timedelta(days=1)
    return {**window, "timezone": KATHMANDU}, opens.astimezone(UTC)


@pytest.mark.parametrize("case", ["later_today", "not_today"])
async def test_a_job_outside_its_calling_window_waits_for_it_to_open(
    client, tenant, agent, running_dialer, cdr_path, app, case
) -> None:
    window, opens = _closed_window(case, utcnow())
    waiting_numbers = ["+15559990001", "+15559990002", "+15559990003"]
    waiting = await post_batch(client, tenant, agent, waiting_numbers, calling_window=window)
    control = await post_batch(client, tenant, agent, ["+15559990004"])

    job_ids = [p["job_id"] for p in waiting["participants"]]

    async def deferred() -> bool:
        found = await rows(app, select(DialJob.run_at).where(DialJob.id.in_(job_ids)))
        return all(run_at > utcnow() for (run_at,) in found)

    async with running_dialer():
        await wait_until(deferred, within=5)
        await wait_until(lambda: _call_final(client, tenant, control["id"]), within=5)
        await asyncio.sleep(0.3)  # the dialer keeps running: nothing more happens

    jobs = await rows(
        app,
        select(DialJob.status, DialJob.run_at, DialJob.attempt, DialJob.lease_owner).where(
            DialJob.id.in_(job_ids)
        ),
    )
    assert len(jobs) == 3
    for status, run_at, attempt, lease_owner in jobs:
        assert (status, attempt, lease_owner) == ("waiting", 0, None)
        assert run_at == opens
        oracle = next_allowed_at(
            CallingWindow.model_validate(window),
            number=waiting_numbers[0],
            contact_timezone=None,
            now=utcnow(),
        )
        assert run_at == oracle
    call = await get_call(client, tenant, waiting["id"])
    assert call["status"] == "queued" and call["ended_at"] is None
    for p in call["participants"]:
        assert (p["status"], p["end_reason"], p["attempts"], p["dialed_at"]) == (
            "queued",
            None,
            0,
            None,
        )
    attempts = await rows(app, select(DialAttempt.id).where(DialAttempt.call_id == waiting["id"]))
    assert attempts == []
    # The dialer was working all along: the call without a window was dialed, and only it.
    assert [line["to"] for line in read_cdr(cdr_path)] == ["+15559990004"]
    assert await stats(client, tenant) == {"waiting": 3, "active": 0, "completed": 1, "failed": 0}


async def test_a_window_open_now_dials_normally(
    client, tenant, agent, running_dialer, cdr_path
) -> None:
    local = utcnow().astimezone(ZoneInfo(KATHMANDU))
    window = {
        "start": _hhmm(local - timedelta(hours=1)),
        "end": _hhmm(local + timedelta(hours=1)),
        "timezone": KATHMANDU,
    }
    numbers = ["+15559990001", "+15559990085"]
    queued = await post_batch(client, tenant, agent, numbers, calling_window=window)
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers), within=5)
    call = await get_call(client, tenant, queued["id"])
    outcomes = [(p["status"], p["end_reason"], p["attempts"]) for p in call["participants"]]
    assert outcomes == [("completed", "answered", 1), ("failed", "busy", 1)]
    assert sorted(line["to"] for line in read_cdr(cdr_path)) == numbers


async def _call_final(client: httpx.AsyncClient, tenant: TenantHandle, call_id: str) -> bool:
    return (await get_call(client, tenant, call_id))["ended_at"] is not None


# --- ending a live call ----------------------------------------------------------------------


async def test_ending_a_call_hangs_up_live_participants_and_cancels_queued_ones(
    client, make_tenant, running_dialer, cdr_path
) -> None:
    tenant, agent = await new_tenant(client, make_tenant, "+15559990000", max_concurrency=2)
    before = await held(client, tenant)
    # Each is answered after 3 s of ringing and would talk for 59 s (0.6 s and 11.8 s here).
    numbers = ["+15559990049", "+15559990149", "+15559990249", "+15559990349"]
    queued = await post_batch(client, tenant, agent, numbers)
    call_id = queued["id"]
    assert await held(client, tenant) > before

    async def two_answered() -> bool:
        call = await get_call(client, tenant, call_id)
        return [p["status"] for p in call["participants"]].count("in_progress") == 2

    async with running_dialer(simulated_speed=5.0, dialer_lease_seconds=0.6):
        await wait_until(two_answered, within=5)
        await asyncio.sleep(0.3)  # a second and a half of simulated talk
        live_stats = await stats(client, tenant)
        assert live_stats == {"waiting": 2, "active": 2, "completed": 0, "failed": 0}
        ended_at = time.monotonic()
        response = await client.post(f"/v1/calls/{call_id}/end", headers=tenant.headers)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [p["status"] for p in answer["participants"]] == [
            "in_progress",
            "in_progress",
            "canceled",
            "canceled",
        ]
        await wait_until(lambda: _call_final(client, tenant, call_id), within=5)
        hung_up_within = time.monotonic() - ended_at

    assert hung_up_within < 2  # lease loop every 0.83 s, then the carrier's ended event
    call = await get_call(client, tenant, call_id)
    # Ended by the user: canceled, as POST /end says of a call it ends at once.
    assert call["status"] == "canceled" and call["ended_at"] is not None
    live, queued_ones = call["participants"][:2], call["participants"][2:]
    for p in live:
        assert (p["status"], p["end_reason"], p["attempts"]) == ("completed", "answered", 1)
        # Cut short: a few simulated seconds, not the 59 the carrier would have talked.
        assert 1 <= p["duration_seconds"] < 20, p
        assert p["cost"] > 0 and p["ended_at"] is not None
    for p in queued_ones:
        assert (p["status"], p["end_reason"], p["attempts"], p["dialed_at"]) == (
            "canceled",
            "canceled",
            0,
            None,
        )
    assert sorted(line["to"] for line in read_cdr(cdr_path)) == numbers[:2]
    assert await stats(client, tenant) == {"waiting": 0, "active": 0, "completed": 2, "failed": 0}
    assert await held(client, tenant) == before


async def test_ending_a_call_does_not_dial_a_participant_still_waiting_for_its_slot(
    client, make_tenant, running_dialer, cdr_path
) -> None:
    """One dial a second: when the call is ended, the first participant is talking and the
    second one's attempt is committed, waiting for its pacing slot a second later (the third
    did not fit in the pacing horizon and waits in the queue). The carrier must never hear of
    the second or the third."""
    tenant, agent = await new_tenant(client, make_tenant, "+15559990000", calls_per_second=1)
    numbers = ["+15559990049", "+15559990149", "+15559990249"]
    queued = await post_batch(client, tenant, agent, numbers)
    call_id = queued["id"]

    async def first_answered() -> bool:
        call = await get_call(client, tenant, call_id)
        return call["participants"][0]["status"] == "in_progress"

    async with running_dialer(
        simulated_speed=20.0, dialer_lease_seconds=2.5, dialer_pacing_horizon_seconds=1.5
    ):
        await wait_until(first_answered, within=5)
        first_answered_at = time.monotonic()
        call = await get_call(client, tenant, call_id)
        assert [p["status"] for p in call["participants"]][:2] == ["in_progress", "dialing"]
        response = await client.post(f"/v1/calls/{call_id}/end", headers=tenant.headers)
        assert response.status_code == 200
        await wait_until(lambda: _call_final(client, tenant, call_id), within=5)
        # The second slot was a second after the first dial, 0.15 s before its answer.
        await asyncio.sleep(max(0.0, first_answered_at + 1.1 - time.monotonic()))
    assert [line["to"] for line in read_cdr(cdr_path)] == numbers[:1]
    call = await get_call(client, tenant, call_id)
    first, *others = call["participants"]
    assert (first["status"], first["end_reason"]) == ("completed", "answered")
    for p in others:
        assert (p["status"], p["end_reason"], p["attempts"]) == ("canceled", "canceled", 0), p
    assert await held(client, tenant) == 0
    assert await stats(client, tenant) == {"waiting": 0, "active": 0, "completed": 1, "failed": 0}


# --- reconciliation after a dialer dies ------------------------------------------------------


async def _discard(_: CallEvent) -> None:
    return None


def _dialer(app: FastAPI, database_url: str, cdr_path: Path, **settings: Any) -> Dialer:
    return Dialer(
        app.state.sessionmaker,
        Settings(
            database_url=database_url,
            simulated_speed=settings.pop("simulated_speed", 200.0),
            simulated_cdr=str(cdr_path),
            **settings,
        ),
    )


async def test_reconcile_withdraws_unseen_attempts_and_ends_the_others_lost(
    client, tenant, agent, app, database_url, cdr_path, running_dialer
) -> None:
    numbers = [f"+1555999000{n}" for n in range(1, 6)]
    queued = await post_batch(client, tenant, agent, numbers)
    call_id = queued["id"]
    hold_each = await held(client, tenant) / len(numbers)
    # What a dialer that died leaves behind: five claimed jobs whose lease has lapsed; four
    # attempts committed; the carrier received three of them (one the dialer had heard was
    # answered, one it had heard was placed, one it had not heard back about at all), the
    # fourth never left; the fifth job never got as far as an attempt.
    dead_id = "deadhost:1:gone"
    now = utcnow()
    async with app.state.sessionmaker() as session, session.begin():
        claimed = await claim.claim_jobs(
            session,
            tenant=TenantLimits(tenant.id, 50, 10),
            dialer_id=dead_id,
            now=now,
            lease_until=now - timedelta(seconds=1),
            limit=50,
        )
        job_of = {job.to_number: job for job in claimed}
        assert set(job_of) == set(numbers)
        ids = new_attempt_ids(4)
        attempts = [
            NewAttempt(attempt_id, job_of[number], 1, now, 1.0)
            for attempt_id, number in zip(ids, numbers[:4], strict=True)
        ]
        await start_attempts(session, attempts=attempts, dialer_id=dead_id, provider="simulated")
    attempt_of = {a.job.to_number: a.id for a in attempts}
    carrier = SimulatedProvider(_discard, speed=1, cdr_path=str(cdr_path))
    for number in numbers[:3]:
        await carrier.place(DialRequest(attempt_of[number], number, "+15559990000", 30))
    await carrier.aclose()  # the dead dialer's calls, gone with it
    async with app.state.sessionmaker() as session, session.begin():
        await mark_placed(
            session,
            placed=[(attempt_of[n], "sim-" + attempt_of[n], now) for n in numbers[:2]],
        )
        await mark_answered(session, events=[CallEvent(attempt_of[numbers[0]], "answered", now)])
    before = await get_call(client, tenant, call_id)
    assert [p["status"] for p in before["participants"]] == [
        "in_progress",
        "dialing",
        "dialing",
        "dialing",
        "queued",
    ]
    assert await stats(client, tenant) == {"waiting": 0, "active": 5, "completed": 0, "failed": 0}

    successor = _dialer(app, database_url, cdr_path)
    try:
        assert await successor.reconcile_expired() == 5
        assert await successor.reconcile_expired() == 0
    finally:
        await successor.provider.aclose()

    call = await get_call(client, tenant, call_id)
    by_number = {p["identity"]: p for p in call["participants"]}
    for number in numbers[:3]:  # the carrier had them: fate unknown, never redialed
        p = by_number[number]
        assert (p["status"], p["end_reason"], p["attempts"]) == ("failed", "lost", 1), p
        assert p["ended_at"] is not None and p["cost"] == 0
    for number in numbers[3:]:  # never dialed: back in the queue, as if never tried
        p = by_number[number]
        assert (p["status"], p["end_reason"], p["attempts"]) == ("queued", None, 0), p
        assert p["dialed_at"] is None, p
    attempt_rows = await rows(
        app,
        select(DialAttempt.id, DialAttempt.status, DialAttempt.end_reason).where(
            DialAttempt.call_id == call_id
        ),
    )
    assert sorted(attempt_rows) == sorted((attempt_of[n], "lost", "lost") for n in numbers[:3])
    jobs = {
        number: (status, attempt, owner)
        for number, status, attempt, owner in await rows(
            app,
            select(DialJob.to_number, DialJob.status, DialJob.attempt, DialJob.lease_owner).where(
                DialJob.call_id == call_id
            ),
        )
    }
    assert jobs == {
        numbers[0]: ("failed", 1, None),
        numbers[1]: ("failed", 1, None),
        numbers[2]: ("failed", 1, None),
        numbers[3]: ("waiting", 0, None),
        numbers[4]: ("waiting", 0, None),
    }
    # Holds released for the three that ended, kept for the two still queued.
    assert await held(client, tenant) == pytest.approx(2 * hold_each)
    assert await stats(client, tenant) == {"waiting": 2, "active": 0, "completed": 0, "failed": 3}

    # A running dialer now dials the two that were never dialed, once, and nobody else.
    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers), within=5)
    assert Counter(line["to"] for line in read_cdr(cdr_path)) == Counter(numbers)
    call = await get_call(client, tenant, call_id)
    assert [p["status"] for p in call["participants"]] == ["failed"] * 3 + ["completed"] * 2
    assert [p["attempts"] for p in call["participants"]] == [1] * 5
    assert call["status"] == "completed" and call["ended_at"] is not None
    assert await held(client, tenant) == 0


async def test_a_dialer_killed_mid_dial_is_reconciled_by_the_next(
    client, make_tenant, app, database_url, cdr_path, running_dialer
) -> None:
    """A real dialer claims and starts placing (two dials a second), then is killed: no hand-
    back, no events, no lease renewal. Its successor withdraws what the carrier never got."""
    tenant, agent = await new_tenant(client, make_tenant, "+15559990000", calls_per_second=2)
    numbers = ["+15559990001", "+15559990002", "+15559990003"]
    queued = await post_batch(client, tenant, agent, numbers)
    doomed = _dialer(
        app,
        database_url,
        cdr_path,
        simulated_speed=1.0,
        dialer_lease_seconds=1.2,  # the horizon must stay under 2/3 of a lease less 0.1 s
        dialer_pacing_horizon_seconds=0.6,
    )
    assert await doomed.claim_round() == 3
    placing = asyncio.create_task(doomed.placer.run())
    await wait_until(lambda: _cdr_has(cdr_path, 1), within=3)
    # kill -9: its pending dials and its calls vanish without a word to the database.
    placing.cancel()
    await doomed.provider.aclose()  # its events go to a queue nobody will ever write
    await asyncio.sleep(1.3)  # the lease lapses
    assert [line["to"] for line in read_cdr(cdr_path)] == numbers[:1]
    dialed_first = read_cdr(cdr_path)[0]["attempt_id"]

    async with running_dialer():
        await wait_until(lambda: queue_drained(client, tenant.headers), within=8)
    cdr = read_cdr(cdr_path)
    assert Counter(line["to"] for line in cdr) == Counter(numbers)
    call = await get_call(client, tenant, queued["id"])
    first, *rest = call["participants"]
    assert (first["status"], first["end_reason"], first["attempts"]) == ("failed", "lost", 1)
    for p in rest:
        assert (p["status"], p["end_reason"], p["attempts"]) == ("completed", "answered", 1)
    attempts = await rows(app, select(DialAttempt.id, DialAttempt.status))
    assert sorted(status for _, status in attempts) == ["ended", "ended", "lost"]
    assert (dialed_first, "lost") in attempts
    assert await held(client, tenant) == 0


async def test_reconcile_leaves_live_leases_alone(
    client, tenant, agent, app, database_url, cdr_path
) -> None:
    await post_batch(client, tenant, agent, ["+15559990001"])
    now = utcnow()
    async with app.state.sessionmaker() as session, session.begin():
        await claim.claim_jobs(
            session,
            tenant=TenantLimits(tenant.id, 50, 10),
            dialer_id="alivehost:1:busy",
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=10,
        )
    other = _dialer(app, database_url, cdr_path)
    try:
        assert await other.reconcile_expired() == 0
    finally:
        await other.provider.aclose()
    owners = await rows(app, select(DialJob.status, DialJob.lease_owner))
    assert owners == [("active", "alivehost:1:busy")]
    assert read_cdr(cdr_path) == []


async def test_an_ended_calls_attempt_withdrawn_by_reconciliation_is_canceled_not_dialed(
    client, tenant, agent, app, database_url, cdr_path, running_dialer
) -> None:
    """The call is ended while a dead dialer holds its participant's attempt, which never
    reached the carrier. Withdrawing the attempt must not queue the participant again."""
    numbers = ["+15559990001"]
    queued = await post_batch(client, tenant, agent, numbers)
    now = utcnow()
    async with app.state.sessionmaker() as session, session.begin():
        (job,) = await claim.claim_jobs(
            session,
            tenant=TenantLimits(tenant.id, 50, 10),
            dialer_id="deadhost:1:gone",
            now=now,
            lease_until=now - timedelta(seconds=1),
            limit=10,
        )
        attempt = NewAttempt(new_attempt_ids(1)[0], job, 1, now, 1.0)
        await start_attempts(
            session, attempts=[attempt], dialer_id="deadhost:1:gone", provider="simulated"
        )
    ended = await client.post(f"/v1/calls/{queued['id']}/end", headers=tenant.headers)
    assert ended.status_code == 200
    assert ended.json()["participants"][0]["status"] == "dialing"  # live: a hang-up is asked

    async with running_dialer():

        async def settled() -> bool:
            return (await stats(client, tenant))["active"] == 0

        await wait_until(settled, within=5)
        await asyncio.sleep(0.3)  # claim rounds keep running: nothing is dialed
    assert read_cdr(cdr_path) == []
    call = await get_call(client, tenant, queued["id"])
    (p,) = call["participants"]
    assert (p["status"], p["end_reason"], p["attempts"]) == ("canceled", "canceled", 0)
    assert call["ended_at"] is not None
    assert await rows(app, select(DialAttempt.id)) == []
    assert await held(client, tenant) == 0
    assert await stats(client, tenant) == {"waiting": 0, "active": 0, "completed": 0, "failed": 0}


async def test_an_attempt_placed_answered_and_ended_in_one_write_is_recorded_whole(
    client, tenant, agent, app
) -> None:
    """The writer folds an attempt's placement and answer into its end when all three reach
    it together (a short call): nothing heard of it may be lost in the fold, and a machine's
    answer still makes the end a voicemail."""
    numbers = ["+15559991001", "+15559991002", "+15559991003"]
    queued = await post_batch(client, tenant, agent, numbers)
    now = utcnow()
    async with app.state.sessionmaker() as session, session.begin():
        claimed = await claim.claim_jobs(
            session,
            tenant=TenantLimits(tenant.id, 50, 10),
            dialer_id="writer-test",
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=50,
        )
        job_of = {job.to_number: job for job in claimed}
        ids = new_attempt_ids(3)
        attempts = [
            NewAttempt(i, job_of[n], 1, now, 1.0) for i, n in zip(ids, numbers, strict=True)
        ]
        await start_attempts(
            session, attempts=attempts, dialer_id="writer-test", provider="simulated"
        )
    human, machine, busy = ids
    placed_at, answered_at, ended_at = (now + timedelta(seconds=s) for s in (1, 3, 40))
    async with app.state.sessionmaker() as session, session.begin():
        await outcomes.record_call_events(
            session,
            placed=[(a, "carrier-" + a, placed_at) for a in ids],
            events=[
                CallEvent(human, "answered", answered_at),
                CallEvent(machine, "answered", answered_at, machine=True, provider_call_id="leg-2"),
                CallEvent(human, "ended", ended_at, "answered", 37),
                CallEvent(machine, "ended", ended_at, "answered", 37),
                CallEvent(busy, "ended", placed_at, "busy"),
            ],
        )
    found = await rows(app, select(DialAttempt).where(DialAttempt.id.in_(ids)))
    got = {a.id: a for (a,) in found}
    assert (got[human].status, got[human].end_reason, got[human].talk_seconds) == (
        "ended",
        "answered",
        37,
    )
    assert (got[human].placed_at, got[human].answered_at) == (placed_at, answered_at)
    assert (got[human].answered_by, got[human].provider_call_id) == ("human", "carrier-" + human)
    # The carrier's id of the connected call wins over the one `place` answered.
    assert (got[machine].answered_by, got[machine].provider_call_id) == ("machine", "leg-2")
    assert got[machine].end_reason == "voicemail"
    assert (got[busy].answered_at, got[busy].answered_by) == (None, None)
    assert got[busy].placed_at == placed_at
    call = await get_call(client, tenant, queued["id"])
    by_number = {p["identity"]: p for p in call["participants"]}
    assert by_number[numbers[0]]["status"] == "completed"
    assert by_number[numbers[0]]["answered_at"] is not None
    assert by_number[numbers[0]]["duration_seconds"] == 37
    assert (by_number[numbers[1]]["status"], by_number[numbers[1]]["end_reason"]) == (
        "completed",
        "voicemail",
    )
    assert (by_number[numbers[2]]["status"], by_number[numbers[2]]["end_reason"]) == (
        "failed",
        "busy",
    )
    assert by_number[numbers[2]]["answered_at"] is None
