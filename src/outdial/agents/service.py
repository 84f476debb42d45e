import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.agents.schemas import AgentCreate, AgentUpdate
from outdial.billing.service import to_micros
from outdial.db import utcnow
from outdial.errors import NotFound
from outdial.ids import new_uuid
from outdial.numbers import service as numbers
from outdial.pagination import PageParams, paginate


def _not_found(agent_id: str) -> NotFound:
    return NotFound(f"No agent {agent_id} for this tenant.", code="agent_not_found")


async def get_agent(session: AsyncSession, *, tenant_id: str, agent_id: str) -> Agent:
    try:
        canonical = str(uuid.UUID(agent_id))
    except ValueError:
        raise _not_found(agent_id) from None
    agent = await session.scalar(
        select(Agent).where(
            Agent.id == canonical, Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None)
        )
    )
    if agent is None:
        raise _not_found(agent_id)
    return agent


async def create_agent(session: AsyncSession, *, tenant_id: str, data: AgentCreate) -> Agent:
    if data.default_from_number is not None:
        await numbers.require_owned(
            session, tenant_id=tenant_id, phone_numbers={data.default_from_number}
        )
    now = utcnow()
    agent = Agent(
        id=new_uuid(),
        tenant_id=tenant_id,
        name=data.name,
        rate_per_minute_micros=to_micros(data.rate_per_minute),
        default_from_number=data.default_from_number,
        voicemail_behavior=data.voicemail_behavior,
        voicemail_message=data.voicemail_message,
        post_call=data.post_call,
        config=data.config,
        created_at=now,
        updated_at=now,
    )
    session.add(agent)
    await session.flush()
    return agent


async def update_agent(
    session: AsyncSession, *, tenant_id: str, agent_id: str, data: AgentUpdate
) -> Agent:
    agent = await get_agent(session, tenant_id=tenant_id, agent_id=agent_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("default_from_number") is not None:
        await numbers.require_owned(
            session, tenant_id=tenant_id, phone_numbers={changes["default_from_number"]}
        )
    rate = changes.pop("rate_per_minute", None)
    if rate is not None:
        agent.rate_per_minute_micros = to_micros(rate)
    for field, value in changes.items():
        if value is None and field in {"name", "voicemail_behavior", "post_call", "config"}:
            continue  # these (and the rate) have no "unset" state; null leaves them as they are
        setattr(agent, field, value)
    agent.updated_at = utcnow()
    await session.flush()
    return agent


async def delete_agent(session: AsyncSession, *, tenant_id: str, agent_id: str) -> None:
    agent = await get_agent(session, tenant_id=tenant_id, agent_id=agent_id)
    agent.deleted_at = utcnow()
    await session.flush()


async def list_agents(session: AsyncSession, *, tenant_id: str, page: PageParams) -> list[Agent]:
    stmt = select(Agent).where(Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None))
    return list((await session.scalars(paginate(stmt, Agent.id, page))).all())
