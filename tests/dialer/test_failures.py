"""A dialer whose database is unreachable says so once per loop, not once per round."""

import asyncio
import logging

import pytest

from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker
from outdial.dialer.failures import FailureWindow
from outdial.dialer.worker import Dialer
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
