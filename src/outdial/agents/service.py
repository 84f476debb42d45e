import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.agents.schemas import AgentCreate, AgentUpdate
from outdial.billing.service import to_micros
from outdial.db import utcnow
from outdial.dialer import jobs
from outdial.errors import NotFound
from outdial.ids import new_uuid
from outdial.numbers import service as numbers
from outdial.pagination import PageParams, paginate
from outdial.signing import new_secret


def _not_found(agent_id: str) -> NotFound:
    return NotFound(f"No agent {agent_id} for this tenant.", code="agent_not_found")


async def get_agent(
    session: AsyncSession, *, tenant_id: str, agent_id: str, lock: bool = False
) -> Agent:
    """The tenant's agent, unless deleted; `lock` holds its row to the end of the
    transaction (two deletions, or a deletion and a change, then run one after the other)."""
    try:
        canonical = str(uuid.UUID(agent_id))
    except ValueError:
        raise _not_found(agent_id) from None
    stmt = select(Agent).where(
        Agent.id == canonical, Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None)
    )
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    agent = await session.scalar(stmt)
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
        stream_url=data.stream_url,
        stream_secret=new_secret(),
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


async def rotate_stream_secret(session: AsyncSession, *, tenant_id: str, agent_id: str) -> Agent:
    """Give the agent a new `stream_secret`; streams opened from now on are signed with it."""
    agent = await get_agent(session, tenant_id=tenant_id, agent_id=agent_id)
    agent.stream_secret = new_secret()
    agent.updated_at = utcnow()
    await session.flush()
    return agent


async def delete_agent(
    session: AsyncSession, *, tenant_id: str, agent_id: str, force: bool = False
) -> None:
    """Delete an agent (a tombstone: its calls keep pointing at it, and the dialer dials none
    of its calls from then on). Work that dials as it (queued calls, started campaigns) makes
    this a 409 `agent_in_use`, unless `force`, which ends that work `not_permitted`
    (dialer/jobs.end_work_using)."""
    agent = await get_agent(session, tenant_id=tenant_id, agent_id=agent_id, lock=True)
    work = await jobs.work_using(session, tenant_id=tenant_id, agent_id=agent.id)
    if work and not force:
        raise work.conflict(f"Agent {agent.id}", code="agent_in_use")
    if work:
        await jobs.end_work_using(session, tenant_id=tenant_id, work=work, agent_id=agent.id)
    agent.deleted_at = utcnow()
    await session.flush()


async def list_agents(session: AsyncSession, *, tenant_id: str, page: PageParams) -> list[Agent]:
    stmt = select(Agent).where(Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None))
    return list((await session.scalars(paginate(stmt, Agent.id, page))).all())
