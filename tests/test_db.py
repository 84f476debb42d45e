"""The storage conformance suite: db.py's helpers behave alike on SQLite and PostgreSQL.

Domain code relies on these and holds no dialect branch of its own, so each helper is proven
here, directly, on both backends (as River proves its drivers)."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Integer, select

from outdial.campaigns.models import CampaignContact
from outdial.db import (
    TEXT,
    TIMESTAMP,
    advisory_xact_lock,
    bulk_insert,
    insert_ignoring_conflicts,
    insert_ignoring_duplicates,
    one_of,
    try_advisory_xact_lock,
    update_rows,
    utcnow,
)
from outdial.dialer.models import CallerPacing, DialJob
from outdial.dialer.statuses import JobStatus

CONTACTS = CampaignContact.__table__
CONTACT_COLUMNS = (
    "campaign_id",
    "id",
    "phone_number",
    "variables",
    "timezone",
    "status",
    "created_at",
)
CREATED = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
JOBS = DialJob.__table__


def _job(i: int, **fields: Any) -> dict[str, Any]:
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    row = {
        "id": f"job_{i}",
        "tenant_id": "tnt_1",
        "call_id": f"call_{i}",
        "participant_id": f"participant_{i}",
        "status": "waiting",
        "to_number": f"+155599900{i:02d}",
        "from_number": "+15559990000",
        "variables": {"name": "Ada", "nested": {"n": i}, "list": [1, "two"]},
        "campaign_id": None,
        "attempt": 0,
        "max_attempts": 1,
        "run_at": now + timedelta(seconds=i),
        "created_at": now,
    }
    return row | fields


def _contact(i: int, campaign: str = "cmp_1") -> tuple[Any, ...]:
    number = f"+1555{i:07d}"
    return (campaign, f"contact_{i:04d}", number, f'{{"n":"{i}"}}', None, "pending", CREATED)


async def test_bulk_insert_round_trips_json_and_microsecond_utc_times(app: FastAPI) -> None:
    rows = [_job(i) for i in range(3)]
    async with app.state.sessionmaker() as session, session.begin():
        await bulk_insert(session, JOBS, rows)
    async with app.state.sessionmaker() as session:
        stored = (await session.scalars(select(DialJob).order_by(DialJob.id))).all()
    assert [j.variables for j in stored] == [r["variables"] for r in rows]
    assert [j.run_at for j in stored] == [r["run_at"] for r in rows]
    assert all(j.run_at.tzinfo is not None for j in stored)


async def test_bulk_insert_of_nothing_is_nothing(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await bulk_insert(session, JOBS, [])
        assert await session.scalar(select(DialJob.id)) is None


@pytest.mark.parametrize("duplicates", [False, True], ids=["fresh", "with-duplicates"])
async def test_insert_ignoring_duplicates_counts_what_went_in(
    app: FastAPI, duplicates: bool
) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        first = await insert_ignoring_duplicates(
            session, CONTACTS, CONTACT_COLUMNS, [_contact(i) for i in range(5)]
        )
    # Fresh rows take COPY's path on PostgreSQL; a chunk holding a duplicate (of an earlier
    # chunk, and of a row of its own) takes the ON CONFLICT path.
    chunk = [_contact(i) for i in range(5, 10)]
    if duplicates:
        chunk += [_contact(2), _contact(7)]
    async with app.state.sessionmaker() as session, session.begin():
        second = await insert_ignoring_duplicates(session, CONTACTS, CONTACT_COLUMNS, chunk)
    async with app.state.sessionmaker() as session:
        stored = (
            await session.execute(
                select(
                    CampaignContact.phone_number,
                    CampaignContact.variables,
                    CampaignContact.created_at,
                ).order_by(CampaignContact.phone_number)
            )
        ).all()
    assert (first, second) == (5, 5)
    assert [row.phone_number for row in stored] == [f"+1555{i:07d}" for i in range(10)]
    assert stored[7].variables == {"n": "7"}  # JSON text went in as JSON
    assert {row.created_at for row in stored} == {CREATED}


async def test_a_failed_duplicate_copy_leaves_the_transaction_usable(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await insert_ignoring_duplicates(session, CONTACTS, CONTACT_COLUMNS, [_contact(1)])
        await insert_ignoring_duplicates(session, CONTACTS, CONTACT_COLUMNS, [_contact(1)])
        await bulk_insert(session, JOBS, [_job(1)])
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(DialJob.id)) == "job_1"


async def test_update_rows_gives_each_row_its_own_values(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await bulk_insert(session, JOBS, [_job(i) for i in range(4)])
    later = utcnow() + timedelta(hours=1)
    async with app.state.sessionmaker() as session, session.begin():
        await update_rows(
            session,
            JOBS,
            [
                {"id": "job_1", "status": "active", "attempt": 2, "run_at": later},
                {"id": "job_3", "status": "failed", "attempt": 5, "run_at": later},
                {"id": "job_9", "status": "failed", "attempt": 1, "run_at": later},  # no such row
            ],
            fields={"id": TEXT, "status": TEXT, "attempt": Integer(), "run_at": TIMESTAMP},
            where=lambda row: (JOBS.c.id == row.id) & (JOBS.c.status == "waiting"),
            values=lambda row: {
                "status": row.status,
                "attempt": JOBS.c.attempt + row.attempt,
                "run_at": row.run_at,
            },
        )
        await update_rows(session, JOBS, [], fields={}, where=lambda r: r, values=lambda r: {})
    async with app.state.sessionmaker() as session:
        jobs = {j.id: j for j in await session.scalars(select(DialJob))}
    assert {i: (j.status, j.attempt) for i, j in jobs.items()} == {
        "job_0": ("waiting", 0),
        "job_1": ("active", 2),
        "job_2": ("waiting", 0),
        "job_3": ("failed", 5),
    }
    assert jobs["job_1"].run_at == later


async def test_one_of_matches_any_of_many_values(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await bulk_insert(session, JOBS, [_job(i) for i in range(5)])
        wanted = [f"job_{i}" for i in (0, 3, 4)] + [f"job_{i}" for i in range(100, 600)]
        found = await session.scalars(select(DialJob.id).where(one_of(session, DialJob.id, wanted)))
        assert sorted(found) == ["job_0", "job_3", "job_4"]
        statuses = await session.scalars(
            select(DialJob.id).where(
                one_of(session, DialJob.status, {JobStatus.WAITING}), DialJob.id == "job_2"
            )
        )
        assert list(statuses) == ["job_2"]


async def test_insert_ignoring_conflicts_keeps_the_first_row(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            insert_ignoring_conflicts(session, CallerPacing),
            [{"from_number": "+15559990000", "next_slot_at": 1.5}],
        )
        await session.execute(
            insert_ignoring_conflicts(session, CallerPacing),
            [
                {"from_number": "+15559990000", "next_slot_at": 9.0},
                {"from_number": "+15559990001", "next_slot_at": 2.0},
            ],
        )
    async with app.state.sessionmaker() as session:
        rows = dict(
            (
                await session.execute(select(CallerPacing.from_number, CallerPacing.next_slot_at))
            ).all()
        )
    assert rows == {"+15559990000": 1.5, "+15559990001": 2.0}


async def test_a_naive_timestamp_is_refused(app: FastAPI) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        async with app.state.sessionmaker() as session, session.begin():
            session.add(DialJob(**_job(1) | {"run_at": datetime(2026, 1, 1)}))


async def test_advisory_locks_serialise_transactions_that_take_the_same_key(
    app: FastAPI, backend: str
) -> None:
    if backend == "sqlite":
        # Every SQLite write transaction is BEGIN IMMEDIATE: serial without any lock.
        async with app.state.sessionmaker() as session, session.begin():
            await advisory_xact_lock(session, "k")
            assert await try_advisory_xact_lock(session, "k")
        return
    order: list[str] = []
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with app.state.sessionmaker() as session, session.begin():
            await advisory_xact_lock(session, "outdial.test")
            assert await try_advisory_xact_lock(session, "outdial.test")  # re-entrant
            held.set()
            await release.wait()
            order.append("holder done")

    async def waiter() -> None:
        await held.wait()
        async with app.state.sessionmaker() as session, session.begin():
            assert not await try_advisory_xact_lock(session, "outdial.test")
            assert await try_advisory_xact_lock(session, "outdial.other")
            release.set()
            await advisory_xact_lock(session, "outdial.test")  # waits for the holder's commit
            order.append("waiter locked")

    await asyncio.wait_for(asyncio.gather(holder(), waiter()), 10)
    assert order == ["holder done", "waiter locked"]
