"""What each dial's agent is told of the call (`CallContext`), read from the database when the
dial is built: where an answered call's audio goes (the agent's stream), and, for a provider
whose calls are rooms, the room the dial joins and the agent sent there."""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.calls.models import Call, Participant
from outdial.calls.webrtc import leg_room_name
from outdial.db import one_of
from outdial.dialer.models import DialAttempt
from outdial.telephony.base import RoomTarget, StreamTarget

AGENT_NAME_CONFIG = "livekit_agent_name"
"""The key of an agent's `config` naming the LiveKit agent dispatched to its calls' rooms."""


async def _contexts(
    session: AsyncSession, *, attempts: Mapping[str, str], streaming_only: bool
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Per attempt (attempt id → participant id): its row, and the `CallContext` fields of
    it. `variables` is the call's variables (a campaign call's are its contact's) merged with
    the participant's metadata, the participant's winning where both name a key."""
    if not attempts:
        return {}
    query = (
        select(
            Participant.id,
            Participant.identity,
            Participant.from_number,
            Participant.participant_metadata,
            Call.id.label("call_id"),
            Call.kind,
            Call.agent_id,
            Call.campaign_id,
            Call.batch_id,
            Call.variables,
            Call.from_number.label("call_from_number"),
            Agent.stream_url,
            Agent.stream_secret,
            Agent.config,
        )
        .join(Call, Call.id == Participant.call_id)
        .join(Agent, Agent.id == Call.agent_id)
        .where(one_of(session, Participant.id, set(attempts.values())))
    )
    if streaming_only:
        query = query.where(Agent.stream_url.is_not(None))
    by_participant = {row.id: row for row in await session.execute(query)}
    contexts: dict[str, tuple[Any, dict[str, Any]]] = {}
    for attempt_id, participant_id in attempts.items():
        row = by_participant.get(participant_id)
        if row is None:
            continue
        contexts[attempt_id] = (
            row,
            {
                "call_id": row.call_id,
                "participant_id": row.id,
                "attempt_id": attempt_id,
                "agent_id": row.agent_id,
                "to": row.identity,
                "from_number": row.from_number or row.call_from_number or "",
                "campaign_id": row.campaign_id,
                "batch_id": row.batch_id,
                "variables": {**(row.variables or {}), **(row.participant_metadata or {})},
            },
        )
    return contexts


async def stream_targets(
    session: AsyncSession, *, attempts: Mapping[str, str]
) -> dict[str, StreamTarget]:
    """The stream of each attempt (attempt id → participant id) whose agent has a
    `stream_url`, by attempt id; attempts whose agent has none are left out (signalling only)."""
    contexts = await _contexts(session, attempts=attempts, streaming_only=True)
    return {
        attempt_id: StreamTarget(url=row.stream_url, secret=row.stream_secret, **context)
        for attempt_id, (row, context) in contexts.items()
    }


async def room_targets(
    session: AsyncSession, *, attempts: Mapping[str, str]
) -> dict[str, RoomTarget]:
    """The room of each attempt (attempt id → participant id), by attempt id, with the agent
    its agent's `config.livekit_agent_name` names (none: no agent is dispatched by name)."""
    contexts = await _contexts(session, attempts=attempts, streaming_only=False)
    return {
        attempt_id: RoomTarget(
            room_name=leg_room_name(call_id=row.call_id, kind=row.kind, participant_id=row.id),
            agent_name=_agent_name(row.config),
            **context,
        )
        for attempt_id, (row, context) in contexts.items()
    }


def _agent_name(config: Mapping[str, Any] | None) -> str | None:
    name = (config or {}).get(AGENT_NAME_CONFIG)
    return name if isinstance(name, str) and name else None


async def stream_target_of_attempt(
    session: AsyncSession, *, attempt_id: str
) -> StreamTarget | None:
    """The stream of one attempt (for a carrier's answer callback), or None when its agent has
    no `stream_url` or the attempt is unknown."""
    participant_id = await session.scalar(
        select(DialAttempt.participant_id).where(DialAttempt.id == attempt_id)
    )
    if participant_id is None:
        return None
    targets = await stream_targets(session, attempts={attempt_id: participant_id})
    return targets.get(attempt_id)
