"""A dialer whose database is unreachable says so once per loop, not once per round, and
still stops when told to."""

import asyncio
import logging
import sqlite3
import time

import asyncpg
import pytest

from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker
from outdial.dialer.failures import FailureWindow
from outdial.dialer.live import LiveCalls
from outdial.dialer.worker import Dialer
from outdial.dialer.writer import EventWriter, Withdrawn
from outdial.wiring import plug_all

UNREACHABLE = "postgresql://postgres@127.0.0.1:9/nowhere"  # port 9 (discard): nothing listens


async def test_a_dialer_without_its_database_logs_a_line_per_loop_not_per_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plug_all()
    settings = Settings(
        database_url=UNREACHABLE,
        dialer_poll_seconds=0.02,
        dialer_lease_seconds=0.6,
        dialer_pacing_horizon_seconds=0.2,
    )
    engine = create_engine(settings.database_url)
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="outdial"):
        running = asyncio.create_task(Dialer(create_sessionmaker(engine), settings).run(stop))
        await asyncio.sleep(2)  # about 100 claim rounds, 10 heartbeats and reconciliations
        stop.set()
        await asyncio.wait_for(running, 10)
    await engine.dispose()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    failing = sorted(r.getMessage().split(" failing:")[0] for r in errors)
    assert failing == [
        "claiming",
        "idle-call sweep",
        "reconciliation",
        "renewing the lease",
    ], failing
    assert all(r.exc_info is None for r in errors)  # no traceback at ERROR


def test_a_failure_window_sums_up_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("outdial.test")
    window = FailureWindow(log, "the loop")
    with caplog.at_level(logging.INFO, logger="outdial.test"):
        for _ in range(5):
            window.failed(ConnectionRefusedError("refused"))
        window.succeeded()
        window.succeeded()
        window.failed(OSError("again"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "the loop failing: ConnectionRefusedError: refused"
    assert lines[1].startswith("the loop recovered after 5 failures in ")
    assert lines[2] == "the loop failing: OSError: again"
    assert len(lines) == 3


async def test_a_dialer_stopping_without_its_database_exits_after_a_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It used to retry its unwritten events forever and never exit. Giving up loses
    nothing: its lease lapses and another dialer reconciles those attempts."""
    plug_all()
    settings = Settings(
        database_url=UNREACHABLE,
        dialer_poll_seconds=0.02,
        dialer_lease_seconds=0.6,
        dialer_pacing_horizon_seconds=0.2,
    )
    engine = create_engine(settings.database_url)
    stop = asyncio.Event()
    dialer = Dialer(create_sessionmaker(engine), settings)
    with caplog.at_level(logging.INFO, logger="outdial"):
        running = asyncio.create_task(dialer.run(stop))
        await dialer.writer.put(Withdrawn("att_never_written"))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(running, 10)
    await engine.dispose()
    [gave_up] = [r for r in caplog.records if "unwritten" in r.getMessage()]
    assert gave_up.levelno == logging.ERROR
    assert "1 call events unwritten" in gave_up.getMessage()


async def test_a_slow_database_is_waited_for(database_url: str) -> None:
    """The writer gives up on a database whose writes fail, not on one that is slow: here
    another connection holds a lock the write needs for longer than `give_up_after`."""
    engine = create_engine(database_url)
    writer = EventWriter(create_sessionmaker(engine), LiveCalls())
    writing = asyncio.create_task(writer.run())
    locked = asyncio.Event()
    holding = asyncio.create_task(hold_write_lock(database_url, seconds=1.5, locked=locked))
    try:
        await locked.wait()
        await writer.put(Withdrawn("att_slow"))  # read from dial_attempts, then written
        started = time.monotonic()
        assert await writer.drained(give_up_after=0.5) == 0
        assert time.monotonic() - started >= 1.3  # it waited out the lock
        await holding
    finally:
        holding.cancel()
        writing.cancel()
        await engine.dispose()


async def hold_write_lock(database_url: str, *, seconds: float, locked: asyncio.Event) -> None:
    """Hold SQLite's write lock, or every lock on PostgreSQL's dial_attempts, for `seconds`."""
    if database_url.startswith("sqlite"):
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            locked.set()
            await asyncio.sleep(seconds)
            holder.execute("COMMIT")
        finally:
            holder.close()
        return
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute("LOCK TABLE dial_attempts IN ACCESS EXCLUSIVE MODE")
            locked.set()
            await asyncio.sleep(seconds)
    finally:
        await connection.close()
