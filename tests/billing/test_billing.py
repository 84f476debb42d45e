"""Billing: the balance endpoint and the cost arithmetic calls are charged with."""

from decimal import Decimal

import pytest

from outdial.billing import service as billing
from outdial.billing.service import (
    call_cost_micros,
    from_micros,
    increment_cost_micros,
    to_micros,
)
from outdial.errors import InsufficientCredits, NotFound
from tests.conftest import error_code

pytestmark = pytest.mark.one_backend

# --- GET /v1/billing/balance ---------------------------------------------------------------


async def test_balance_shape(client, make_tenant) -> None:
    tenant = await make_tenant(credits=12.5)
    response = await client.get("/v1/billing/balance", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json() == {"balance": 12.5, "available": 12.5, "held": 0.0, "is_active": True}


async def test_balance_of_an_empty_account(client, make_tenant) -> None:
    tenant = await make_tenant(credits=0)
    body = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert body == {"balance": 0.0, "available": 0.0, "held": 0.0, "is_active": False}


async def test_balance_shows_holds(client, make_tenant) -> None:
    tenant = await make_tenant(credits=10)
    await client.post("/v1/numbers", json={"phone_number": "+15559990000"}, headers=tenant.headers)
    agent = (
        await client.post(
            "/v1/agents", json={"name": "A", "rate_per_minute": 1}, headers=tenant.headers
        )
    ).json()
    batch = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": ["+15559990001", "+15559990002", "+15559990003"]},
        headers=tenant.headers,
    )
    assert batch.status_code == 202, batch.text
    body = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    # one 30-second increment at 1 credit a minute, per recipient
    assert body == {"balance": 10.0, "available": 8.5, "held": 1.5, "is_active": True}

    ended = await client.post(f"/v1/calls/{batch.json()['id']}/end", headers=tenant.headers)
    assert ended.status_code == 200
    body = (await client.get("/v1/billing/balance", headers=tenant.headers)).json()
    assert body == {"balance": 10.0, "available": 10.0, "held": 0.0, "is_active": True}


async def test_balance_is_per_tenant(client, make_tenant) -> None:
    rich = await make_tenant(credits=100)
    poor = await make_tenant(credits=1)
    assert (await client.get("/v1/billing/balance", headers=rich.headers)).json()["balance"] == 100
    assert (await client.get("/v1/billing/balance", headers=poor.headers)).json()["balance"] == 1


async def test_balance_needs_a_key(client, tenant) -> None:
    response = await client.get("/v1/billing/balance")
    assert response.status_code == 401
    assert error_code(response) == "missing_api_key"


# --- the ledger, through the service -------------------------------------------------------


async def test_add_credits_appends_to_the_ledger(app, make_tenant) -> None:
    from sqlalchemy import select

    from outdial.billing.models import LedgerEntry

    tenant = await make_tenant(credits=1)
    async with app.state.sessionmaker() as session, session.begin():
        balance = await billing.add_credits(
            session, tenant_id=tenant.id, amount_micros=to_micros("2.5")
        )
    assert balance == to_micros("3.5")
    async with app.state.sessionmaker() as session:
        entries = (
            await session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.tenant_id == tenant.id)
                .order_by(LedgerEntry.created_at)
            )
        ).all()
        assert [(e.kind, e.amount_micros) for e in entries] == [
            ("topup", 1_000_000),
            ("topup", 2_500_000),
        ]
        assert sum(e.amount_micros for e in entries) == balance


async def test_add_credits_to_unknown_tenant(app, tenant) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        with pytest.raises(NotFound) as raised:
            await billing.add_credits(session, tenant_id="ten_nope", amount_micros=1)
    assert raised.value.code == "tenant_not_found"


async def test_hold_beyond_available_is_refused(app, make_tenant) -> None:
    tenant = await make_tenant(credits=1)
    async with app.state.sessionmaker() as session, session.begin():
        await billing.place_hold(session, tenant_id=tenant.id, amount_micros=600_000)
        with pytest.raises(InsufficientCredits) as raised:
            await billing.place_hold(session, tenant_id=tenant.id, amount_micros=400_001)
        assert raised.value.details == {"required": 0.400001, "available": 0.4}
        await billing.place_hold(session, tenant_id=tenant.id, amount_micros=400_000)
        assert await billing.available_micros(session, tenant_id=tenant.id) == 0
        await billing.release_holds(
            session, releases=[billing.Release(tenant.id, 600_000, 500_000, "call_x")]
        )
    async with app.state.sessionmaker() as session:
        assert await billing.get_balance(session, tenant_id=tenant.id) == (500_000, 400_000, True)


# --- cost arithmetic -----------------------------------------------------------------------

ONE = 1_000_000  # one credit, in micro-credits


@pytest.mark.parametrize(
    ("rate", "seconds", "credits"),
    [
        (ONE, 0, Decimal(0)),
        (ONE, 1, Decimal("0.5")),
        (ONE, 29, Decimal("0.5")),
        (ONE, 30, Decimal("0.5")),
        (ONE, 31, Decimal("1.0")),  # 31 s = 2 increments
        (ONE, 60, Decimal("1.0")),
        (ONE, 61, Decimal("1.5")),
        (ONE, 90, Decimal("1.5")),
        (ONE, 91, Decimal("2.0")),
        (ONE, 3600, Decimal("60")),
        (to_micros("0.1"), 31, Decimal("0.1")),
        (to_micros("0.1"), 45, Decimal("0.1")),
        (to_micros("0.1"), 61, Decimal("0.15")),
        (0, 3600, Decimal(0)),
        # half a micro-credit per increment rounds up to a whole one
        (1, 30, Decimal("0.000001")),
        (1, 31, Decimal("0.000002")),
        (3, 30, Decimal("0.000002")),
    ],
)
def test_call_cost_is_30_second_increments_rounded_up(rate, seconds, credits) -> None:
    assert call_cost_micros(rate, seconds) == to_micros(credits)


def test_increment_cost() -> None:
    assert increment_cost_micros(ONE) == 500_000
    assert increment_cost_micros(to_micros("0.1")) == 50_000
    assert increment_cost_micros(0) == 0
    assert increment_cost_micros(1) == 1  # never free when the rate is not
    assert increment_cost_micros(7) == 4


def test_cost_never_undercharges() -> None:
    for rate in (1, 2, 3, 7, 99_999, ONE, 1_234_567):
        for seconds in range(0, 200):
            cost = call_cost_micros(rate, seconds)
            exact = Decimal(rate) * Decimal(seconds) / 60
            assert cost >= exact, (rate, seconds)
            increments = -(-seconds // 30)
            assert cost == increments * increment_cost_micros(rate)


@pytest.mark.parametrize(
    ("credits", "micros"),
    [
        (0, 0),
        (1, 1_000_000),
        (0.1, 100_000),
        ("0.1", 100_000),
        (Decimal("12.345678"), 12_345_678),
        (Decimal("0.0000005"), 1),  # half a micro rounds half up
        (Decimal("0.0000004"), 0),
        (1e-6, 1),
        (1_000_000, 10**12),
    ],
)
def test_to_micros(credits, micros) -> None:
    assert to_micros(credits) == micros


def test_from_micros_round_trips() -> None:
    for text in ("0", "0.1", "0.05", "1.5", "12.345678", "999999.999999"):
        assert from_micros(to_micros(Decimal(text))) == float(text)
