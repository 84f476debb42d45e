import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents import service as agents
from outdial.agents.models import Agent
from outdial.errors import Conflict, NotFound, Unauthorized
from outdial.ids import new_id
from outdial.keys.models import ApiKey
from outdial.keys.schemas import KeyCreate
from outdial.numbers import service as numbers
from outdial.pagination import PageParams, paginate
from outdial.tenants.models import Tenant

PREFIXES = {"secret": "sb_secret_", "publishable": "sb_publishable_"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and the key it authenticated with."""

    tenant_id: str
    key_id: str
    key_type: str
    agent_id: str | None
    channels: tuple[str, ...]
    default_from_number: str | None
    agent_from_number: str | None = None
    """A publishable key's agent's default caller ID, read with the key."""
    variables: Mapping[str, Any] = field(default_factory=dict)
    """A publishable key's fixed variables (none for a secret key)."""

    @property
    def is_secret(self) -> bool:
        return self.key_type == "secret"


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


async def issue_key(
    session: AsyncSession,
    *,
    tenant_id: str,
    type: str,
    label: str | None = None,
    agent_id: str | None = None,
    channels: list[str] | None = None,
    default_from_number: str | None = None,
    variables: dict[str, Any] | None = None,
) -> tuple[ApiKey, str]:
    plaintext = PREFIXES[type] + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        type=type,
        label=label,
        digest=digest(plaintext),
        last4=plaintext[-4:],
        agent_id=agent_id,
        channels=channels,
        default_from_number=default_from_number,
        variables=variables,
    )
    session.add(key)
    await session.flush()
    return key, plaintext


async def create_key(
    session: AsyncSession, *, tenant_id: str, data: KeyCreate
) -> tuple[ApiKey, str]:
    channels = None
    variables = None
    if data.type == "publishable":
        assert data.agent_id is not None
        await agents.get_agent(session, tenant_id=tenant_id, agent_id=data.agent_id)
        if data.default_from_number is not None:
            await numbers.require_owned(
                session, tenant_id=tenant_id, phone_numbers={data.default_from_number}
            )
        channels = sorted(set(data.channels or ["web", "phone"]))
        variables = data.variables or {}
    return await issue_key(
        session,
        tenant_id=tenant_id,
        type=data.type,
        label=data.label,
        agent_id=data.agent_id,
        channels=channels,
        default_from_number=data.default_from_number,
        variables=variables,
    )


async def list_keys(session: AsyncSession, *, tenant_id: str, page: PageParams) -> list[ApiKey]:
    stmt = paginate(select(ApiKey).where(ApiKey.tenant_id == tenant_id), ApiKey.id, page)
    return list((await session.scalars(stmt)).all())


async def delete_key(session: AsyncSession, *, tenant_id: str, key_id: str) -> None:
    """Delete a key; it stops working at once. The last secret key stays: without it the
    tenant could never manage its account again (no API call could mint a new one)."""
    # Concurrent deletions of a tenant's keys queue here, so two cannot remove the last two.
    await session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    key = await session.scalar(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id)
    )
    if key is None:
        raise NotFound(f"No key {key_id}.", code="key_not_found")
    if key.type == "secret":
        secret_keys = await session.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.tenant_id == tenant_id, ApiKey.type == "secret")
        )
        if secret_keys == 1:
            raise Conflict(
                "This is the tenant's last secret key; create another before deleting it.",
                code="last_secret_key",
            )
    await session.execute(delete(ApiKey).where(ApiKey.id == key.id))


async def authenticate(session: AsyncSession, *, token: str) -> Principal:
    if not token.startswith(tuple(PREFIXES.values())):
        raise Unauthorized("Unknown API key.", code="invalid_api_key")
    found = (
        await session.execute(
            select(ApiKey, Agent.default_from_number)
            .outerjoin(Agent, Agent.id == ApiKey.agent_id)
            .where(ApiKey.digest == digest(token))
        )
    ).first()
    if found is None:
        raise Unauthorized("Unknown API key.", code="invalid_api_key")
    key, agent_from_number = found
    return Principal(
        tenant_id=key.tenant_id,
        key_id=key.id,
        key_type=key.type,
        agent_id=key.agent_id,
        channels=tuple(key.channels or ()),
        default_from_number=key.default_from_number,
        agent_from_number=agent_from_number,
        variables=key.variables or {},
    )
