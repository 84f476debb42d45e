"""Tenants' dialing permissions: what they are, how they change, and the checks that apply
them to the numbers a request or a dial is about to call."""

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.errors import Forbidden
from outdial.numbers.models import PhoneNumber
from outdial.permissions.destinations import Permissions, Refusal, country_of, refusals
from outdial.permissions.schemas import DialingPermissionsUpdate
from outdial.tenants.models import Tenant
from outdial.tenants.service import get_tenant


@dataclass(frozen=True, slots=True)
class DialingPermissions:
    countries: tuple[str, ...]
    caller_id_countries: bool
    allow_premium_rate: bool
    allow_high_risk: bool
    effective: Permissions
    """What they allow right now (the caller IDs' countries added in)."""


@dataclass(frozen=True, slots=True)
class PermissionChanges:
    """Amendments, as the operator CLI asks for them; None leaves a setting as it is."""

    allow_countries: Sequence[str] = ()
    disallow_countries: Sequence[str] = ()
    caller_id_countries: bool | None = None
    allow_premium_rate: bool | None = None
    allow_high_risk: bool | None = None


class Dialable(Protocol):
    """A participant as a request names it (calls.service.NewParticipant)."""

    @property
    def transport(self) -> str: ...

    @property
    def identity(self) -> str: ...


async def dialing_permissions(session: AsyncSession, *, tenant_id: str) -> DialingPermissions:
    """The tenant's permissions, with the countries of its caller IDs worked out (one query)."""
    rows = (
        await session.execute(
            select(
                Tenant.dialing_countries,
                Tenant.dialing_caller_id_countries,
                Tenant.dialing_allow_premium_rate,
                Tenant.dialing_allow_high_risk,
                PhoneNumber.phone_number,
            )
            .outerjoin(PhoneNumber, PhoneNumber.tenant_id == Tenant.id)
            .where(Tenant.id == tenant_id)
        )
    ).all()
    if not rows:
        await get_tenant(session, tenant_id=tenant_id)  # raises tenant_not_found
    first = rows[0]
    return _permissions(
        countries=first.dialing_countries,
        caller_id_countries=first.dialing_caller_id_countries,
        allow_premium_rate=first.dialing_allow_premium_rate,
        allow_high_risk=first.dialing_allow_high_risk,
        caller_ids=[row.phone_number for row in rows if row.phone_number is not None],
    )


def _permissions(
    *,
    countries: Iterable[str],
    caller_id_countries: bool,
    allow_premium_rate: bool,
    allow_high_risk: bool,
    caller_ids: Iterable[str],
) -> DialingPermissions:
    chosen = tuple(sorted(set(countries)))
    effective = set(chosen)
    if caller_id_countries:
        effective.update(country_of(number) for number in caller_ids)
    return DialingPermissions(
        countries=chosen,
        caller_id_countries=caller_id_countries,
        allow_premium_rate=allow_premium_rate,
        allow_high_risk=allow_high_risk,
        effective=Permissions(frozenset(effective), allow_premium_rate, allow_high_risk),
    )


async def set_dialing_permissions(
    session: AsyncSession, *, tenant_id: str, data: DialingPermissionsUpdate
) -> DialingPermissions:
    """Replace the tenant's permissions (`PUT /v1/dialing-permissions`)."""
    tenant = await get_tenant(session, tenant_id=tenant_id)
    tenant.dialing_countries = sorted(set(data.countries))
    tenant.dialing_caller_id_countries = data.caller_id_countries
    tenant.dialing_allow_premium_rate = data.allow_premium_rate
    tenant.dialing_allow_high_risk = data.allow_high_risk
    await session.flush()
    return await dialing_permissions(session, tenant_id=tenant_id)


async def change_dialing_permissions(
    session: AsyncSession, *, tenant_id: str, changes: PermissionChanges
) -> DialingPermissions:
    """Amend the tenant's permissions (`outdial tenant update … --allow-country GB`); country
    codes must already be normalised (`schemas.country_code`)."""
    tenant = await get_tenant(session, tenant_id=tenant_id)
    countries = (set(tenant.dialing_countries) | set(changes.allow_countries)) - set(
        changes.disallow_countries
    )
    tenant.dialing_countries = sorted(countries)
    if changes.caller_id_countries is not None:
        tenant.dialing_caller_id_countries = changes.caller_id_countries
    if changes.allow_premium_rate is not None:
        tenant.dialing_allow_premium_rate = changes.allow_premium_rate
    if changes.allow_high_risk is not None:
        tenant.dialing_allow_high_risk = changes.allow_high_risk
    await session.flush()
    return await dialing_permissions(session, tenant_id=tenant_id)


async def refused_destinations(
    session: AsyncSession, *, tenant_id: str, numbers: Collection[str]
) -> dict[str, Refusal]:
    """The numbers (E.164) the tenant may not dial under its permissions as they are now, each
    with why; allowed numbers are absent. The dialer calls this right before dialing."""
    if not numbers:
        return {}
    permissions = await dialing_permissions(session, tenant_id=tenant_id)
    return refusals(numbers, permissions.effective)


async def reject_refused_destinations(
    session: AsyncSession, *, tenant_id: str, participants: Sequence[Dialable]
) -> None:
    """Raise 403 `destination_not_permitted`, listing every refused PSTN participant with its
    index and reason, unless the tenant may dial them all."""
    numbers = [p.identity for p in participants if p.transport == "pstn"]
    refused = await refused_destinations(session, tenant_id=tenant_id, numbers=numbers)
    if not refused:
        return
    listed = [
        {
            "index": index,
            "number": p.identity,
            "code": refused[p.identity].code,
            "reason": refused[p.identity].reason,
            "country": refused[p.identity].country,
        }
        for index, p in enumerate(participants)
        if p.transport == "pstn" and p.identity in refused
    ]
    raise Forbidden(
        f"{len(listed)} recipient(s) may not be dialed under the tenant's dialing permissions "
        "(GET /v1/dialing-permissions); nothing was queued.",
        code="destination_not_permitted",
        details={"refused": listed},
    )
