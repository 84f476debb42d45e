from sqlalchemy.ext.asyncio import AsyncSession

from outdial.billing import service as billing
from outdial.errors import NotFound
from outdial.ids import new_id
from outdial.keys import service as keys
from outdial.tenants.models import Tenant


async def create_tenant(
    session: AsyncSession,
    *,
    name: str,
    max_concurrency: int,
    calls_per_second: float,
    credits_micros: int = 0,
) -> tuple[Tenant, str]:
    """Create a tenant with its first secret key; answers the tenant and the key's plaintext."""
    tenant = Tenant(
        id=new_id("ten"),
        name=name,
        max_concurrency=max_concurrency,
        calls_per_second=calls_per_second,
        balance_micros=0,
        held_micros=0,
        is_active=True,
    )
    session.add(tenant)
    await session.flush()
    if credits_micros:
        await billing.add_credits(session, tenant_id=tenant.id, amount_micros=credits_micros)
    _, plaintext = await keys.issue_key(
        session, tenant_id=tenant.id, type="secret", label="default"
    )
    return tenant, plaintext


async def get_tenant(session: AsyncSession, *, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id}.", code="tenant_not_found")
    return tenant


async def update_limits(
    session: AsyncSession,
    *,
    tenant_id: str,
    max_concurrency: int | None = None,
    calls_per_second: float | None = None,
) -> Tenant:
    tenant = await get_tenant(session, tenant_id=tenant_id)
    if max_concurrency is not None:
        tenant.max_concurrency = max_concurrency
    if calls_per_second is not None:
        tenant.calls_per_second = calls_per_second
    await session.flush()
    return tenant
