from collections.abc import Collection

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import advisory_xact_lock
from outdial.dialer import jobs
from outdial.errors import Conflict, NotFound, ValidationFailed
from outdial.numbers.models import PhoneNumber
from outdial.numbers.schemas import NumberCreate, NumberUpdate
from outdial.pagination import PageParams, paginate
from outdial.phones import InvalidPhoneNumber, to_e164


async def register_number(
    session: AsyncSession, *, tenant_id: str, data: NumberCreate
) -> PhoneNumber:
    """Register a caller ID; the tenant's first number becomes its default."""
    await _lock_tenant_numbers(session, tenant_id=tenant_id)
    existing = await session.get(PhoneNumber, data.phone_number)
    if existing is not None:
        raise _already_registered(data.phone_number)
    owned = await session.scalar(
        select(func.count()).select_from(PhoneNumber).where(PhoneNumber.tenant_id == tenant_id)
    )
    is_default = data.is_default or owned == 0
    if is_default:
        await _clear_default(session, tenant_id=tenant_id)
    number = PhoneNumber(
        phone_number=data.phone_number, tenant_id=tenant_id, label=data.label, is_default=is_default
    )
    session.add(number)
    try:
        await session.flush()
    except IntegrityError:
        # Another tenant registered it concurrently and committed first.
        raise _already_registered(data.phone_number) from None
    return number


def _already_registered(phone_number: str) -> Conflict:
    return Conflict(f"{phone_number} is already registered.", code="number_already_registered")


async def _lock_tenant_numbers(session: AsyncSession, *, tenant_id: str) -> None:
    """Serialise one tenant's changes to its numbers, so that concurrent requests never leave
    it with two defaults, or none."""
    await advisory_xact_lock(session, f"outdial.numbers:{tenant_id}")


async def _clear_default(session: AsyncSession, *, tenant_id: str) -> None:
    await session.execute(
        update(PhoneNumber)
        .where(PhoneNumber.tenant_id == tenant_id, PhoneNumber.is_default.is_(True))
        .values(is_default=False)
    )


async def list_numbers(
    session: AsyncSession, *, tenant_id: str, page: PageParams
) -> list[PhoneNumber]:
    stmt = select(PhoneNumber).where(PhoneNumber.tenant_id == tenant_id)
    return list((await session.scalars(paginate(stmt, PhoneNumber.phone_number, page))).all())


async def update_number(
    session: AsyncSession, *, tenant_id: str, phone_number: str, data: NumberUpdate
) -> PhoneNumber:
    """Change a caller ID's label, or make it the tenant's default: the previous default stops
    being it in the same transaction, so the tenant always has exactly one."""
    await _lock_tenant_numbers(session, tenant_id=tenant_id)
    number = await _owned_number(session, tenant_id=tenant_id, phone_number=phone_number)
    if data.is_default is False and number.is_default:
        raise Conflict(
            f"{number.phone_number} is the default caller ID: make another number the "
            "default instead (PUT it with is_default true).",
            code="default_number_required",
        )
    if data.is_default and not number.is_default:
        await _clear_default(session, tenant_id=tenant_id)
        number.is_default = True
    if "label" in data.model_fields_set:
        number.label = data.label
    await session.flush()
    return number


async def _owned_number(session: AsyncSession, *, tenant_id: str, phone_number: str) -> PhoneNumber:
    """The tenant's number (as given in a path: E.164, or anything; 404 if not the tenant's)."""
    try:
        e164 = to_e164(phone_number)
    except InvalidPhoneNumber:
        e164 = phone_number
    number = await session.get(PhoneNumber, e164, populate_existing=True)
    if number is None or number.tenant_id != tenant_id:
        raise NotFound(f"No number {phone_number} for this tenant.", code="number_not_found")
    return number


async def delete_number(
    session: AsyncSession, *, tenant_id: str, phone_number: str, force: bool = False
) -> None:
    """Release a caller ID; if it was the default, the oldest remaining number takes over.
    Work that dials from it (queued calls, started campaigns) makes this a 409
    `number_in_use`, unless `force`, which ends that work `not_permitted`
    (dialer/jobs.end_work_using)."""
    try:
        e164 = to_e164(phone_number)
    except InvalidPhoneNumber:
        e164 = phone_number
    await _lock_tenant_numbers(session, tenant_id=tenant_id)
    number = await session.get(PhoneNumber, e164)
    if number is None or number.tenant_id != tenant_id:
        raise NotFound(f"No number {phone_number} for this tenant.", code="number_not_found")
    work = await jobs.work_using(session, tenant_id=tenant_id, from_number=e164)
    if work and not force:
        raise work.conflict(f"Caller ID {e164}", code="number_in_use")
    if work:
        await jobs.end_work_using(session, tenant_id=tenant_id, work=work, from_number=e164)
    await session.delete(number)
    await session.flush()
    if number.is_default:
        successor = await session.scalar(
            select(PhoneNumber)
            .where(PhoneNumber.tenant_id == tenant_id)
            .order_by(PhoneNumber.created_at, PhoneNumber.phone_number)
            .limit(1)
        )
        if successor is not None:
            successor.is_default = True
            await session.flush()


async def default_number(session: AsyncSession, *, tenant_id: str) -> str | None:
    return await session.scalar(
        select(PhoneNumber.phone_number).where(
            PhoneNumber.tenant_id == tenant_id, PhoneNumber.is_default.is_(True)
        )
    )


async def require_owned(
    session: AsyncSession, *, tenant_id: str, phone_numbers: Collection[str]
) -> None:
    """Raise 400 `from_number_not_owned` unless the tenant owns every one of these numbers."""
    if not phone_numbers:
        return
    owned = set(
        await session.scalars(
            select(PhoneNumber.phone_number).where(
                PhoneNumber.tenant_id == tenant_id,
                PhoneNumber.phone_number.in_(list(phone_numbers)),
            )
        )
    )
    missing = sorted(set(phone_numbers) - owned)
    if missing:
        raise ValidationFailed(
            "The tenant does not own these caller IDs: " + ", ".join(missing) + ".",
            code="from_number_not_owned",
            details={"from_numbers": missing},
        )
