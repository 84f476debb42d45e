from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents import service as agents
from outdial.agents.models import Agent
from outdial.billing import service as billing
from outdial.calls.models import Call, Participant
from outdial.calls.rows import call_row, insert_calls, participant_row
from outdial.calls.schemas import (
    DEFAULT_MAX_ATTEMPTS_PER_24H,
    BatchCreate,
    CallCreate,
    CallOptions,
)
from outdial.calls.statuses import LIVE_PARTICIPANT, CallStatus, EndReason, ParticipantStatus
from outdial.calls.webrtc import join_token, room_name
from outdial.config import Settings
from outdial.db import utcnow
from outdial.dialer import jobs as dial_jobs
from outdial.dialer.models import DialAttempt
from outdial.dialer.sources import ParticipantChange
from outdial.dialer.status import change_participants, complete_finished_calls
from outdial.dnc import service as dnc
from outdial.errors import Conflict, Forbidden, NotFound, ValidationFailed
from outdial.ids import new_id, new_ids
from outdial.keys.service import Principal
from outdial.numbers.models import PhoneNumber
from outdial.pagination import PageParams, paginate
from outdial.permissions import service as permissions
from outdial.telephony.registry import provider_class


@dataclass(slots=True)
class NewParticipant:
    """A participant as the request asked for it, before anything is stored."""

    transport: str
    identity: str
    from_number: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class QueuedParticipant:
    id: str
    transport: str
    identity: str
    status: str
    telephony_leg_id: str | None
    job_id: str | None
    url: str | None = None
    token: str | None = None


@dataclass(slots=True)
class QueuedCall:
    id: str
    status: str
    batch_id: str | None
    participants: list[QueuedParticipant]

    @property
    def queued(self) -> int:
        return sum(1 for p in self.participants if p.transport == "pstn")


def merge_over(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` onto `base`: nested objects merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_over(merged[key], value)
        else:
            merged[key] = value
    return merged


async def _resolve_from_numbers(
    session: AsyncSession,
    *,
    tenant_id: str,
    participants: Sequence[NewParticipant],
    request_from: str | None,
    agent: Agent,
    key_default: str | None,
) -> list[str | None]:
    """Caller ID per participant: its own → the request's → the key's → the agent's → the
    tenant's default. Every one chosen must be a number the tenant owns."""
    pstn = [p for p in participants if p.transport == "pstn"]
    if not pstn:
        return [None] * len(participants)
    fallbacks = [n for n in (request_from, key_default, agent.default_from_number) if n]
    candidates = {p.from_number for p in pstn if p.from_number} | set(fallbacks)
    rows = (
        await session.execute(
            select(PhoneNumber.phone_number, PhoneNumber.is_default).where(
                PhoneNumber.tenant_id == tenant_id,
                or_(PhoneNumber.phone_number.in_(candidates), PhoneNumber.is_default.is_(True)),
            )
        )
    ).all()
    owned = {row.phone_number for row in rows}
    tenant_default = next((row.phone_number for row in rows if row.is_default), None)
    shared = fallbacks[0] if fallbacks else tenant_default
    resolved = [(p.from_number or shared) if p.transport == "pstn" else None for p in participants]
    if any(
        p.transport == "pstn" and n is None for p, n in zip(participants, resolved, strict=True)
    ):
        raise ValidationFailed(
            "No caller ID: pass from_number, or register a number (POST /v1/numbers).",
            code="no_from_number",
        )
    not_owned = sorted({n for n in resolved if n is not None and n not in owned})
    if not_owned:
        raise ValidationFailed(
            "The tenant does not own these caller IDs: " + ", ".join(not_owned) + ".",
            code="from_number_not_owned",
            details={"from_numbers": not_owned},
        )
    return resolved


async def _reject_dnc(
    session: AsyncSession, *, tenant_id: str, participants: Sequence[NewParticipant]
) -> None:
    numbers = [p.identity for p in participants if p.transport == "pstn"]
    blocked = await dnc.blocked_numbers(session, tenant_id=tenant_id, phone_numbers=numbers)
    if blocked:
        listed = sorted(blocked)
        raise Conflict(
            f"{len(listed)} recipient(s) are on the do-not-call list; nothing was queued.",
            code="dnc_blocked",
            details={
                "blocked": listed,
                "indexes": [
                    i
                    for i, p in enumerate(participants)
                    if p.transport == "pstn" and p.identity in blocked
                ],
            },
        )


async def _queue(
    session: AsyncSession,
    *,
    settings: Settings,
    principal: Principal,
    agent: Agent,
    kind: str,
    batch_id: str | None,
    options: CallOptions,
    participants: Sequence[NewParticipant],
) -> QueuedCall:
    """Validate, hold credits and store a call with its participants (each PSTN one with its
    telephony leg id) and their dial jobs.

    Everything is written in the caller's transaction: the caller commits once, before it
    answers, so an answered request never loses a queued dial."""
    tenant_id = principal.tenant_id
    from_numbers = await _resolve_from_numbers(
        session,
        tenant_id=tenant_id,
        participants=participants,
        request_from=options.from_number,
        agent=agent,
        key_default=principal.default_from_number,
    )
    await _reject_dnc(session, tenant_id=tenant_id, participants=participants)
    await permissions.reject_refused_destinations(
        session, tenant_id=tenant_id, participants=participants
    )
    hold_each = billing.increment_cost_micros(agent.rate_per_minute_micros)
    pstn_count = sum(1 for p in participants if p.transport == "pstn")
    await billing.place_hold(session, tenant_id=tenant_id, amount_micros=hold_each * pstn_count)

    now = utcnow()
    call = call_row(
        id=new_id("call"),
        tenant_id=tenant_id,
        agent_id=agent.id,
        kind=kind,
        batch_id=batch_id,
        status=CallStatus.QUEUED if pstn_count else CallStatus.IN_PROGRESS,
        from_number=options.from_number,
        metadata=options.metadata,
        variables=options.variables,
        post_call=merge_over(agent.post_call or {}, options.post_call or {}),
        calling_window=options.calling_window.model_dump() if options.calling_window else None,
        retry=options.retry.model_dump() if options.retry else None,
        ring_timeout_seconds=options.ring_timeout_seconds,
        state_rules=options.state_rules,
        max_attempts_per_24h=(
            (options.max_attempts_per_24h or DEFAULT_MAX_ATTEMPTS_PER_24H)
            if options.state_rules
            else None
        ),
        webrtc_seen=provider_class(settings).sees_webrtc,
        now=now,
    )
    count = len(participants)
    participant_ids = new_ids("participant", count)
    leg_ids = new_ids("leg", count)
    job_ids = new_ids("job", count)
    participant_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    queued: list[QueuedParticipant] = []
    for position, (p, from_number) in enumerate(zip(participants, from_numbers, strict=True)):
        participant_id = participant_ids[position]
        is_pstn = p.transport == "pstn"
        leg_id = leg_ids[position] if is_pstn else None
        job_id = job_ids[position] if is_pstn else None
        participant_rows.append(
            participant_row(
                id=participant_id,
                call_id=call["id"],
                tenant_id=tenant_id,
                position=position,
                transport=p.transport,
                identity=p.identity,
                from_number=from_number,
                metadata=p.metadata,
                leg_id=leg_id,
                job_id=job_id,
                hold_micros=hold_each if is_pstn else 0,
                now=now,
            )
        )
        entry = QueuedParticipant(
            id=participant_id,
            transport=p.transport,
            identity=p.identity,
            status=ParticipantStatus.QUEUED,
            telephony_leg_id=leg_id,
            job_id=job_id,
        )
        if is_pstn:
            assert job_id is not None and from_number is not None
            job_rows.append(
                dial_jobs.job_row(
                    id=job_id,
                    tenant_id=tenant_id,
                    call_id=call["id"],
                    participant_id=participant_id,
                    to_number=p.identity,
                    from_number=from_number,
                    variables=options.variables,
                    max_attempts=options.retry.max_attempts if options.retry else 1,
                    now=now,
                )
            )
        else:
            entry.url = settings.livekit_url
            entry.token = join_token(
                settings, room_name=room_name(call["id"]), identity=p.identity, name=p.name
            )
        queued.append(entry)

    await insert_calls(session, calls=[call], participants=participant_rows, jobs=job_rows)
    if job_rows:
        await dial_jobs.wake_dialers(session)
    return QueuedCall(id=call["id"], status=call["status"], batch_id=batch_id, participants=queued)


async def queue_batch(
    session: AsyncSession, *, settings: Settings, principal: Principal, data: BatchCreate
) -> QueuedCall:
    """Queue one PSTN participant per recipient under a single call session."""
    agent = await agents.get_agent(
        session, tenant_id=principal.tenant_id, agent_id=str(data.agent_id)
    )
    if data.recipients is not None:
        participants = [
            NewParticipant(
                transport="pstn", identity=r.number, from_number=r.from_number, metadata=r.metadata
            )
            for r in data.recipients
        ]
    else:
        participants = [NewParticipant(transport="pstn", identity=n) for n in data.to or []]
    return await _queue(
        session,
        settings=settings,
        principal=principal,
        agent=agent,
        kind="batch",
        batch_id=data.batch_id or new_id("batch"),
        options=data,
        participants=participants,
    )


def _authorize_publishable(principal: Principal, data: CallCreate) -> str:
    """A publishable key sits in a public web page, so whoever reads the page holds it. It may
    only call as its own agent, over its own channels; at most one PSTN participant a request;
    only from the key's or the agent's caller ID (a request naming another is refused, one
    naming none gets the usual resolution); with the variables fixed on the key, which the
    request may add to but not override (nor may a participant's metadata, which the agent
    sees merged over them); and no `retry` or `post_call` of its own. The fixed variables are
    merged into `data.variables` here, so the call carries them."""
    assert principal.agent_id is not None
    if data.agent_id is not None and str(data.agent_id) != principal.agent_id:
        raise Forbidden(
            "This publishable key may only place calls for its own agent.",
            code="publishable_key_forbidden",
        )
    channel_of = {"pstn": "phone", "webrtc": "web"}
    refused = sorted(
        {
            p.transport
            for p in data.participants
            if channel_of[p.transport] not in principal.channels
        }
    )
    if refused:
        raise Forbidden(
            "This publishable key may not use transport " + ", ".join(refused) + ".",
            code="publishable_key_forbidden",
        )
    pstn = [p for p in data.participants if p.transport == "pstn"]
    if len(pstn) > 1:
        raise Forbidden(
            f"A publishable key places at most one PSTN participant per request ({len(pstn)} "
            "were sent).",
            code="publishable_key_forbidden",
            details={"rule": "one_pstn_participant", "pstn_participants": len(pstn)},
        )
    allowed = sorted({n for n in (principal.default_from_number, principal.agent_from_number) if n})
    named = {data.from_number, *(p.from_number for p in pstn)} - {None}
    if named - set(allowed):
        raise Forbidden(
            "A publishable key may only call from its own or its agent's default caller ID ("
            + (", ".join(allowed) or "neither is set")
            + ").",
            code="publishable_key_forbidden",
            details={"rule": "from_number", "from_numbers": sorted(named), "allowed": allowed},
        )
    fixed = principal.variables
    sent = set(data.variables).union(*(p.metadata for p in data.participants))
    overridden = sorted(sent.intersection(fixed))
    if overridden:
        raise Forbidden(
            "These variables are fixed on the publishable key and cannot be overridden: "
            + ", ".join(overridden)
            + ".",
            code="publishable_key_forbidden",
            details={"rule": "variables", "variables": overridden},
        )
    options = sorted(name for name in ("retry", "post_call") if getattr(data, name) is not None)
    if options:
        raise Forbidden(
            "A publishable key may not set " + " or ".join(options) + ".",
            code="publishable_key_forbidden",
            details={"rule": "options", "fields": options},
        )
    data.variables = {**data.variables, **fixed}
    return principal.agent_id


async def create_call(
    session: AsyncSession, *, settings: Settings, principal: Principal, data: CallCreate
) -> QueuedCall:
    """Create a call whose PSTN participants are queued and WebRTC ones get a join token."""
    if principal.is_secret:
        if data.agent_id is None:
            raise ValidationFailed(
                "agent_id is required.",
                details=[{"loc": ["agent_id"], "message": "Field required", "type": "missing"}],
            )
        agent_id = str(data.agent_id)
    else:
        agent_id = _authorize_publishable(principal, data)
    agent = await agents.get_agent(session, tenant_id=principal.tenant_id, agent_id=agent_id)
    participants = [
        NewParticipant(
            transport=p.transport,
            identity=p.identity,
            from_number=p.from_number,
            name=p.name,
            metadata=p.metadata,
        )
        for p in data.participants
    ]
    return await _queue(
        session,
        settings=settings,
        principal=principal,
        agent=agent,
        kind="direct",
        batch_id=None,
        options=data,
        participants=participants,
    )


async def get_call(session: AsyncSession, *, tenant_id: str, call_id: str) -> Call:
    call = await session.scalar(select(Call).where(Call.id == call_id, Call.tenant_id == tenant_id))
    if call is None:
        raise NotFound(f"No call {call_id} for this tenant.", code="call_not_found")
    return call


async def participants_of(session: AsyncSession, *, call_id: str) -> list[Participant]:
    stmt = select(Participant).where(Participant.call_id == call_id).order_by(Participant.position)
    return list((await session.scalars(stmt)).all())


async def attempts_of(
    session: AsyncSession, *, call_id: str, page: PageParams
) -> list[DialAttempt]:
    """A call's dial attempts, oldest first (ids sort by creation), a page of them."""
    # Through its participants, whose attempts are indexed; attempts are not, by call.
    of_call = select(Participant.id).where(Participant.call_id == call_id)
    stmt = select(DialAttempt).where(DialAttempt.participant_id.in_(of_call))
    return list((await session.scalars(paginate(stmt, DialAttempt.id, page))).all())


async def list_calls(
    session: AsyncSession,
    *,
    tenant_id: str,
    page: PageParams,
    batch_id: str | None = None,
    campaign_id: str | None = None,
    status: str | None = None,
) -> list[Call]:
    stmt = select(Call).where(Call.tenant_id == tenant_id)
    if batch_id is not None:
        stmt = stmt.where(Call.batch_id == batch_id)
    if campaign_id is not None:
        stmt = stmt.where(Call.campaign_id == campaign_id)
    if status is not None:
        stmt = stmt.where(Call.status == status)
    return list((await session.scalars(paginate(stmt, Call.id, page))).all())


async def end_call(session: AsyncSession, *, tenant_id: str, call_id: str) -> Call:
    """Cancel every participant still queued (its hold released, its job canceled) and ask the
    dialer to hang up the live ones. A WebRTC participant still queued is canceled where the
    provider reports who joins (it never came); where the provider cannot see it, it ends
    with the call (dialer/status.py): at once when no PSTN participant is live, else when
    the last one has hung up. Ending an ended call changes nothing."""
    call = await get_call(session, tenant_id=tenant_id, call_id=call_id)
    await dial_jobs.cancel_waiting(session, tenant_id=tenant_id, call_id=call.id)
    now = utcnow()
    if call.webrtc_seen:
        never_came = await session.scalars(
            select(Participant.id).where(
                Participant.call_id == call.id,
                Participant.transport == "webrtc",
                Participant.status == ParticipantStatus.QUEUED,
            )
        )
        await change_participants(
            session,
            changes=[
                ParticipantChange(
                    p, tenant_id, ParticipantStatus.CANCELED, now, end_reason=EndReason.CANCELED
                )
                for p in never_came
            ],
        )
    await session.execute(
        update(Participant)
        .where(Participant.call_id == call.id, Participant.status.in_(LIVE_PARTICIPANT))
        .values(hangup_requested_at=now)
    )
    await complete_finished_calls(session, call_ids={call.id})
    await session.refresh(call)
    return call


async def queue_stats(session: AsyncSession, *, tenant_id: str) -> dict[str, int]:
    """The tenant's dial jobs by state: waiting, active, completed, failed."""
    return await dial_jobs.counts_by_status(session, tenant_id=tenant_id)
