from collections.abc import Collection

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import insert_ignoring_conflicts, one_of, utcnow
from outdial.dnc.models import DncEntry
from outdial.errors import NotFound
from outdial.pagination import PageParams, paginate
from outdial.phones import InvalidPhoneNumber, to_e164


async def add_numbers(
    session: AsyncSession, *, tenant_id: str, phone_numbers: Collection[str], reason: str | None
) -> int:
    """Upsert numbers onto the list; answers how many were not on it before."""
    unique = sorted(set(phone_numbers))
    already = await blocked_numbers(session, tenant_id=tenant_id, phone_numbers=unique)
    now = utcnow()
    rows = [
        {
            "tenant_id": tenant_id,
            "phone_number": n,
            "reason": reason,
            "source": "api",
            "created_at": now,
        }
        for n in unique
        if n not in already
    ]
    if rows:
        await session.execute(insert_ignoring_conflicts(session, DncEntry), rows)
    return len(rows)


async def get_entry(session: AsyncSession, *, tenant_id: str, phone_number: str) -> DncEntry:
    entry = await session.get(DncEntry, (tenant_id, phone_number))
    assert entry is not None
    return entry


async def blocked_numbers(
    session: AsyncSession, *, tenant_id: str, phone_numbers: Collection[str]
) -> set[str]:
    """Which of these numbers the tenant's do-not-call list holds."""
    if not phone_numbers:
        return set()
    return set(
        await session.scalars(
            select(DncEntry.phone_number).where(
                DncEntry.tenant_id == tenant_id,
                one_of(session, DncEntry.phone_number, phone_numbers),
            )
        )
    )


async def list_entries(
    session: AsyncSession, *, tenant_id: str, page: PageParams
) -> list[DncEntry]:
    stmt = select(DncEntry).where(DncEntry.tenant_id == tenant_id)
    return list((await session.scalars(paginate(stmt, DncEntry.phone_number, page))).all())


async def remove_number(session: AsyncSession, *, tenant_id: str, phone_number: str) -> None:
    try:
        e164 = to_e164(phone_number)
    except InvalidPhoneNumber:
        e164 = phone_number
    result = await session.execute(
        delete(DncEntry).where(DncEntry.tenant_id == tenant_id, DncEntry.phone_number == e164)
    )
    if result.rowcount == 0:
        raise NotFound(f"{phone_number} is not on the do-not-call list.", code="dnc_not_found")
