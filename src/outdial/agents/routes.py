from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from outdial.agents import service
from outdial.agents.models import Agent
from outdial.agents.schemas import AgentCreate, AgentOut, AgentUpdate
from outdial.billing.service import from_micros
from outdial.errors import error_responses
from outdial.idempotency import idempotent
from outdial.keys.auth import SecretKey, Session
from outdial.pagination import Page, PageParams, page_of, page_params

router = APIRouter(prefix="/agents", tags=["agents"], responses=error_responses(403))


def agent_out(agent: Agent) -> AgentOut:
    return AgentOut(
        id=agent.id,
        name=agent.name,
        rate_per_minute=from_micros(agent.rate_per_minute_micros),
        default_from_number=agent.default_from_number,
        voicemail_behavior=agent.voicemail_behavior,
        voicemail_message=agent.voicemail_message,
        post_call=agent.post_call,
        config=agent.config,
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )


@router.post("", status_code=201, response_model=AgentOut, responses=error_responses(400, 422))
async def create_agent(
    request: Request, body: AgentCreate, session: Session, principal: SecretKey
) -> JSONResponse:
    """Create an agent persona to dial with."""

    async def create() -> AgentOut:
        agent = await service.create_agent(session, tenant_id=principal.tenant_id, data=body)
        return agent_out(agent)

    return await idempotent(
        request, session, tenant_id=principal.tenant_id, status_code=201, create=create
    )


@router.get("", response_model=Page[AgentOut])
async def list_agents(
    session: Session, principal: SecretKey, page: Annotated[PageParams, Depends(page_params)]
) -> Page[AgentOut]:
    """List the tenant's agents."""
    agents = await service.list_agents(session, tenant_id=principal.tenant_id, page=page)
    rows, cursor = page_of(agents, page, lambda a: a.id)
    return Page(data=[agent_out(a) for a in rows], next_cursor=cursor)


@router.get("/{agent_id}", response_model=AgentOut, responses=error_responses(404))
async def get_agent(agent_id: str, session: Session, principal: SecretKey) -> AgentOut:
    """Fetch one agent."""
    agent = await service.get_agent(session, tenant_id=principal.tenant_id, agent_id=agent_id)
    return agent_out(agent)


@router.put("/{agent_id}", response_model=AgentOut, responses=error_responses(404))
async def update_agent(
    agent_id: str, body: AgentUpdate, session: Session, principal: SecretKey
) -> AgentOut:
    """Change an agent; fields left out keep their values."""
    agent = await service.update_agent(
        session, tenant_id=principal.tenant_id, agent_id=agent_id, data=body
    )
    return agent_out(agent)


@router.delete("/{agent_id}", status_code=204, responses=error_responses(404))
async def delete_agent(agent_id: str, session: Session, principal: SecretKey) -> Response:
    """Delete an agent; calls made with it keep their history."""
    await service.delete_agent(session, tenant_id=principal.tenant_id, agent_id=agent_id)
    return Response(status_code=204)
