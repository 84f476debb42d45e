from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from outdial.agents import service
from outdial.agents.models import Agent
from outdial.agents.schemas import AgentCreate, AgentOut, AgentUpdate
from outdial.billing.service import from_micros
from outdial.error_handlers import error_responses
from outdial.idempotency.dependency import Idempotent
from outdial.keys.auth import SecretKey, Session
from outdial.pagination import Page, PageParams, page_of
from outdial.pagination_query import page_params
from outdial.signing import SECRET_PREFIX

Force = Annotated[
    bool,
    Query(
        description="Delete it even though queued calls or started campaigns dial as it: "
        "that work ends `not_permitted` (live calls finish)."
    ),
]

router = APIRouter(prefix="/agents", tags=["agents"], responses=error_responses(403))


SECRET_SHOWN = 4
"""How many trailing characters of a stream secret a masked one keeps (to tell secrets apart)."""


def masked(secret: str) -> str:
    """`whsec_****` and the secret's last characters: enough to tell which one is set."""
    return f"{SECRET_PREFIX}****{secret[-SECRET_SHOWN:]}"


def agent_out(agent: Agent, *, reveal_secret: bool = False) -> AgentOut:
    """The agent as answered; its stream secret in full only when `reveal_secret`."""
    return AgentOut(
        id=agent.id,
        name=agent.name,
        rate_per_minute=from_micros(agent.rate_per_minute_micros),
        default_from_number=agent.default_from_number,
        voicemail_behavior=agent.voicemail_behavior,
        voicemail_message=agent.voicemail_message,
        post_call=agent.post_call,
        config=agent.config,
        stream_url=agent.stream_url,
        stream_secret=agent.stream_secret if reveal_secret else masked(agent.stream_secret),
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )


@router.post("", status_code=201, response_model=AgentOut, responses=error_responses(400, 422))
async def create_agent(
    body: AgentCreate, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Create an agent persona to dial with."""
    agent = await service.create_agent(session, tenant_id=principal.tenant_id, data=body)
    return once.answer(agent_out(agent, reveal_secret=True), 201)


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


@router.post(
    "/{agent_id}/rotate-secret", response_model=AgentOut, responses=error_responses(404, 422)
)
async def rotate_secret(
    agent_id: str, session: Session, principal: SecretKey, once: Idempotent
) -> JSONResponse:
    """Replace the agent's stream secret; answers the agent with the new one in full."""
    agent = await service.rotate_stream_secret(
        session, tenant_id=principal.tenant_id, agent_id=agent_id
    )
    return once.answer(agent_out(agent, reveal_secret=True), 200)


@router.delete("/{agent_id}", status_code=204, responses=error_responses(404, 409))
async def delete_agent(
    agent_id: str, session: Session, principal: SecretKey, force: Force = False
) -> Response:
    """Delete an agent (its calls keep their history); 409 `agent_in_use` while in use."""
    await service.delete_agent(
        session, tenant_id=principal.tenant_id, agent_id=agent_id, force=force
    )
    return Response(status_code=204)
