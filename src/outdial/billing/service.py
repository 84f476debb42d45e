from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.billing.models import LedgerEntry
from outdial.db import bulk_insert, utcnow
from outdial.errors import InsufficientCredits, NotFound
from outdial.ids import new_id
from outdial.tenants.models import Tenant

MICROS = 1_000_000
INCREMENT_SECONDS = 30


def to_micros(credits: Decimal | float | int) -> int:
    return int((Decimal(str(credits)) * MICROS).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_micros(micros: int) -> float:
    return float(Decimal(micros) / MICROS)


def increment_cost_micros(rate_per_minute_micros: int) -> int:
    """The price of one 30-second increment at a per-minute rate, rounded up to a micro-credit."""
    return -(-rate_per_minute_micros * INCREMENT_SECONDS // 60)


def call_cost_micros(rate_per_minute_micros: int, duration_seconds: int) -> int:
    """Billed in 30-second increments, each started increment in full."""
    increments = -(-duration_seconds // INCREMENT_SECONDS)
    return increments * increment_cost_micros(rate_per_minute_micros)


async def add_credits(session: AsyncSession, *, tenant_id: str, amount_micros: int) -> int:
    """Append a top-up to the ledger; answers the new balance in micro-credits."""
    new_balance = await session.scalar(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(balance_micros=Tenant.balance_micros + amount_micros)
        .returning(Tenant.balance_micros)
    )
    if new_balance is None:
        raise NotFound(f"No tenant {tenant_id}.", code="tenant_not_found")
    session.add(
        LedgerEntry(
            id=new_id("led"), tenant_id=tenant_id, amount_micros=amount_micros, kind="topup"
        )
    )
    await session.flush()
    return new_balance


async def place_hold(session: AsyncSession, *, tenant_id: str, amount_micros: int) -> None:
    """Reserve credits, or raise 402. Check and reservation are one conditional UPDATE, so
    racing requests (the row lock serialises them) never reserve the same credits twice."""
    if amount_micros <= 0:
        return
    held = await session.scalar(
        update(Tenant)
        .where(
            Tenant.id == tenant_id,
            Tenant.balance_micros - Tenant.held_micros >= amount_micros,
        )
        .values(held_micros=Tenant.held_micros + amount_micros)
        .returning(Tenant.held_micros)
    )
    if held is None:
        available = await available_micros(session, tenant_id=tenant_id)
        raise InsufficientCredits(
            "Not enough credits: this request holds one 30-second increment per recipient.",
            details={"required": from_micros(amount_micros), "available": from_micros(available)},
        )


async def add_hold(session: AsyncSession, *, tenant_id: str, amount_micros: int) -> None:
    """Reserve credits without the check `place_hold` makes: for a dial the dialer has just
    found the tenant in credit for (a campaign call holds its first increment when dialed)."""
    if amount_micros <= 0:
        return
    await session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(held_micros=Tenant.held_micros + amount_micros)
    )


@dataclass(frozen=True, slots=True)
class Release:
    """A hold that ends, and the real charge taken in its place (0 if nothing to bill)."""

    tenant_id: str
    hold_micros: int
    charge_micros: int
    reference: str
    """The participant whose hold it was (the ledger's reference for its charge)."""


async def release_holds(session: AsyncSession, *, releases: Sequence[Release]) -> None:
    """End holds and take their real charges in one step: one UPDATE per tenant, one
    append-only ledger row per charge."""
    per_tenant: dict[str, tuple[int, int]] = {}
    for r in releases:
        held, charged = per_tenant.get(r.tenant_id, (0, 0))
        per_tenant[r.tenant_id] = (held + r.hold_micros, charged + r.charge_micros)
    # In id order: two dialers settling the same tenants must lock their rows alike.
    for tenant_id, (held, charged) in sorted(per_tenant.items()):
        await session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(
                held_micros=Tenant.held_micros - held,
                balance_micros=Tenant.balance_micros - charged,
            )
        )
    now = utcnow()
    await bulk_insert(
        session,
        LedgerEntry.__table__,
        [
            {
                "id": new_id("led"),
                "tenant_id": r.tenant_id,
                "amount_micros": -r.charge_micros,
                "kind": "charge",
                "reference": r.reference,
                "created_at": now,
            }
            for r in releases
            if r.charge_micros
        ],
    )


async def available_micros(session: AsyncSession, *, tenant_id: str) -> int:
    row = (
        await session.execute(
            select(Tenant.balance_micros, Tenant.held_micros).where(Tenant.id == tenant_id)
        )
    ).one()
    return row.balance_micros - row.held_micros


async def get_balance(session: AsyncSession, *, tenant_id: str) -> tuple[int, int, bool]:
    tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    return tenant.balance_micros, tenant.held_micros, tenant.is_active
