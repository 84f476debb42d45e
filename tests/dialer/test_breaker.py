"""The dialer's circuit breaker and backoff (dialer/breaker.py), what they report, and the
probe claim: the parts alone. A dead trunk through a running dialer, end to end, is in
tests/telephony/test_sip_trunk_down.py."""

import logging
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from outdial import observability as obs
from outdial.config import Settings
from outdial.dialer.breaker import Backoff, BreakerState, CircuitBreaker
from outdial.dialer.models import DialJob
from outdial.dialer.worker import Dialer
from tests.conftest import MakeTenant, create_agent, register_number

OPEN, HALF_OPEN, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[tuple[BreakerState, BreakerState, str]]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[Any]) -> CircuitBreaker:
    return CircuitBreaker(
        failures_to_open=3,
        cool_down=30,
        on_change=lambda previous, state, why: changes.append((previous, state, why)),
        clock=clock,
    )


def test_closed_it_leaves_claims_alone_and_opens_after_enough_failures_in_a_row(
    breaker: CircuitBreaker, changes: list[Any]
) -> None:
    assert breaker.claim_limit(dials_in_hand=40) is None
    breaker.dial_not_taken("refused")
    breaker.dial_not_taken("refused")
    breaker.dial_taken()  # the run is broken: counting starts again
    breaker.dial_not_taken("refused")
    breaker.dial_not_taken("refused")
    assert breaker.state is CLOSED and changes == []
    breaker.dial_not_taken("[Errno 111] Connection refused")
    assert breaker.state is OPEN
    assert changes == [
        (CLOSED, OPEN, "3 dials in a row were not taken (last: [Errno 111] Connection refused)")
    ]
    assert breaker.claim_limit(dials_in_hand=0) == 0


def test_open_it_claims_nothing_until_the_cool_down_then_probes_one_dial_at_a_time(
    breaker: CircuitBreaker, clock: Clock, changes: list[Any]
) -> None:
    for _ in range(3):
        breaker.dial_not_taken("refused")
    # Dials placed before it opened fail too: they change nothing.
    for _ in range(10):
        breaker.dial_not_taken("refused")
    clock.now += 29.9
    assert breaker.claim_limit(dials_in_hand=0) == 0
    clock.now += 0.1
    # Half-open: one probe, and only while no other dial is waiting for its slot or answer.
    assert breaker.claim_limit(dials_in_hand=2) == 0
    assert breaker.state is HALF_OPEN
    assert breaker.claim_limit(dials_in_hand=0) == 1
    assert breaker.claim_limit(dials_in_hand=1) == 0  # the probe is in hand
    breaker.dial_not_taken("still refused")
    assert breaker.state is OPEN  # again, for another cool-down from now
    clock.now += 29
    assert breaker.claim_limit(dials_in_hand=0) == 0
    clock.now += 1
    assert breaker.claim_limit(dials_in_hand=0) == 1
    breaker.dial_taken()
    assert breaker.state is CLOSED and breaker.claim_limit(dials_in_hand=7) is None
    assert [(a, b) for a, b, _ in changes] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    assert changes[2][2] == "the probe dial was not taken: still refused"


def test_a_dial_taken_while_open_closes_it_and_the_count_starts_afresh(
    breaker: CircuitBreaker,
) -> None:
    for _ in range(3):
        breaker.dial_not_taken("refused")
    breaker.dial_taken()  # a dial placed before it opened got through after all
    assert breaker.state is CLOSED
    breaker.dial_not_taken("refused")
    breaker.dial_not_taken("refused")
    assert breaker.state is CLOSED


@pytest.mark.parametrize(("failures", "cool_down"), [(0, 30), (3, 0), (3, -1)])
def test_a_breaker_needs_a_threshold_and_a_cool_down(failures: int, cool_down: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures_to_open=failures, cool_down=cool_down)


def test_the_backoff_grows_then_holds_at_its_cap() -> None:
    backoff = Backoff.of_seconds([10, 30, 60, 300])
    assert [backoff.after(n).total_seconds() for n in range(7)] == [10, 30, 60, 300, 300, 300, 300]
    assert Backoff.of_seconds([5]).after(3) == timedelta(seconds=5)


@pytest.mark.parametrize("seconds", [[], [10, 0], [-1]])
def test_a_backoff_needs_delays_above_zero(seconds: list[float]) -> None:
    with pytest.raises(ValueError):
        Backoff.of_seconds(seconds)


def test_the_settings_default_to_the_documented_backoff_and_breaker() -> None:
    settings = Settings()
    assert settings.dialer_unreachable_backoff_seconds == [10, 30, 60, 300]
    assert (settings.dialer_breaker_failures, settings.dialer_breaker_cool_down_seconds) == (5, 30)
    with pytest.raises(ValueError):
        Settings(dialer_unreachable_backoff_seconds=[])
    with pytest.raises(ValueError):
        Settings(dialer_unreachable_backoff_seconds=[10, 0])


def gauge(provider: str) -> float | None:
    return REGISTRY.get_sample_value("outdial_provider_circuit_open", {"provider": provider})


def test_an_outage_writes_two_lines_and_the_gauge_follows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="outdial.dials")
    seen: list[float | None] = []
    breaker = CircuitBreaker(
        failures_to_open=2,
        cool_down=0.001,
        on_change=lambda previous, state, why: (
            obs.provider_circuit_changed("testcarrier", previous, state, why),
            seen.append(gauge("testcarrier")),
        ),
    )
    for _ in range(50):  # an outage of many dials and many probes
        breaker.dial_not_taken("refused")
        while breaker.claim_limit(dials_in_hand=0) == 0:
            pass
    breaker.dial_taken()
    lines = [r for r in caplog.records if r.name == "outdial.dials"]
    loud = [(r.levelname, r.getMessage()) for r in lines if r.levelno >= logging.INFO]
    assert loud == [
        (
            "WARNING",
            "telephony provider testcarrier is down: no new dials until it takes one again "
            "(2 dials in a row were not taken (last: refused))",
        ),
        ("INFO", "telephony provider testcarrier is up again: dialing resumes"),
    ]
    assert all(r.levelno == logging.DEBUG for r in lines if r not in lines[:1] + lines[-1:])
    assert seen[0] == 1 and seen[-1] == 0 and set(seen[1:-1]) == {1}
    assert lines[0].__dict__["circuit"] == "open" and lines[0].__dict__["provider"] == "testcarrier"


async def test_a_probe_claims_one_job_whatever_the_tenants(
    client, make_tenant: MakeTenant, app: FastAPI, database_url: str
) -> None:
    for n in range(3):
        tenant = await make_tenant()
        await register_number(client, tenant, f"+1555777000{n}")
        agent = await create_agent(client, tenant)
        numbers = [f"+155577710{n}{i}" for i in range(4)]
        queued = await client.post(
            "/v1/calls/batch", json={"agent_id": agent["id"], "to": numbers}, headers=tenant.headers
        )
        assert queued.status_code == 202, queued.text
    dialer = Dialer(app.state.sessionmaker, Settings(database_url=database_url))
    try:
        assert await dialer.claimer.claim_round(1) == 1
        assert dialer.placer.in_hand == 1
        async with app.state.sessionmaker() as session:
            active = await session.scalar(
                select(func.count()).select_from(DialJob).where(DialJob.status == "active")
            )
        assert active == 1
        assert await dialer.claimer.claim_round() == 11  # unlimited: the rest
    finally:
        await dialer.placer.hand_back()
        await dialer.provider.aclose()
