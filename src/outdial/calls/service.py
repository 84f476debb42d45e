from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents import service as agents
from outdial.agents.models import Agent
from outdial.billing import service as billing
from outdial.calls.models import Call, DialJob, Participant
from outdial.calls.schemas import BatchCreate, CallCreate, CallOptions
from outdial.calls.webrtc import join_token
from outdial.config import Settings
from outdial.db import bulk_insert, utcnow
from outdial.dialer import campaign_queue
from outdial.dnc import service as dnc
from outdial.errors import Conflict, Forbidden, NotFound, ValidationFailed
from outdial.ids import new_id, new_ids
from outdial.keys.service import Principal
from outdial.numbers.models import PhoneNumber
from outdial.pagination import PageParams, paginate

FINAL_STATUSES = frozenset({"completed", "failed", "canceled"})
LIVE_STATUSES = frozenset({"dialing", "in_progress"})


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
    call: Call
    participants: list[QueuedParticipant]

    @property
    def queued(self) -> int:
        return sum(1 for p in self.participants if p.transport == "pstn")


def room_name(call_id: str) -> str:
    return "call_" + call_id


def merge_over(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` onto `base`: nested objects merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_over(merged[key], value)
        else:
            merged[key] = value
    return merged


def _reject_duplicates(participants: Sequence[NewParticipant], field_name: str) -> None:
    first_seen: dict[tuple[str, str], int] = {}
    duplicates = []
    for index, p in enumerate(participants):
        key = (p.transport, p.identity)
        if key in first_seen:
            duplicates.append(
                {"index": index, "identity": p.identity, "first_index": first_seen[key]}
            )
        else:
            first_seen[key] = index
    if duplicates:
        listed = ", ".join(sorted({d["identity"] for d in duplicates}))
        raise ValidationFailed(
            f"A recipient appears more than once in {field_name}: {listed}.",
            code="duplicate_recipient",
            details=duplicates,
        )


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
    field_name: str,
) -> QueuedCall:
    """Validate, hold credits and store a call with its participants (each PSTN one with its
    telephony leg id) and their dial jobs.

    Everything is written in the caller's transaction: the caller commits once, before it
    answers, so an answered request never loses a queued dial."""
    tenant_id = principal.tenant_id
    _reject_duplicates(participants, field_name)
    from_numbers = await _resolve_from_numbers(
        session,
        tenant_id=tenant_id,
        participants=participants,
        request_from=options.from_number,
        agent=agent,
        key_default=principal.default_from_number,
    )
    await _reject_dnc(session, tenant_id=tenant_id, participants=participants)
    hold_each = billing.increment_cost_micros(agent.rate_per_minute_micros)
    pstn_count = sum(1 for p in participants if p.transport == "pstn")
    await billing.place_hold(session, tenant_id=tenant_id, amount_micros=hold_each * pstn_count)

    now = utcnow()
    call = Call(
        id=new_id("call"),
        tenant_id=tenant_id,
        agent_id=agent.id,
        kind=kind,
        batch_id=batch_id,
        status="queued" if pstn_count else "in_progress",
        from_number=options.from_number,
        call_metadata=options.metadata,
        variables=options.variables,
        post_call=merge_over(agent.post_call or {}, options.post_call or {}),
        calling_window=options.calling_window.model_dump() if options.calling_window else None,
        retry=options.retry.model_dump() if options.retry else None,
        ring_timeout_seconds=options.ring_timeout_seconds,
        created_at=now,
    )
    session.add(call)
    await session.flush()

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
            {
                "id": participant_id,
                "call_id": call.id,
                "tenant_id": tenant_id,
                "position": position,
                "transport": p.transport,
                "identity": p.identity,
                "from_number": from_number,
                "metadata": p.metadata,
                "status": "queued",
                "attempts": 0,
                "telephony_leg_id": leg_id,
                "job_id": job_id,
                "hold_micros": hold_each if is_pstn else 0,
                "cost_micros": 0,
                "created_at": now,
            }
        )
        entry = QueuedParticipant(
            id=participant_id,
            transport=p.transport,
            identity=p.identity,
            status="queued",
            telephony_leg_id=leg_id,
            job_id=job_id,
        )
        if is_pstn:
            job_rows.append(
                {
                    "id": job_id,
                    "tenant_id": tenant_id,
                    "call_id": call.id,
                    "participant_id": participant_id,
                    "status": "waiting",
                    "to_number": p.identity,
                    "from_number": from_number,
                    "variables": options.variables,
                    "attempt": 0,
                    "max_attempts": options.retry.max_attempts if options.retry else 1,
                    "run_at": now,
                    "created_at": now,
                }
            )
        else:
            entry.url = settings.livekit_url
            entry.token = join_token(
                settings, room_name=room_name(call.id), identity=p.identity, name=p.name
            )
        queued.append(entry)

    await bulk_insert(session, Participant.__table__, participant_rows)
    await bulk_insert(session, DialJob.__table__, job_rows)
    return QueuedCall(call=call, participants=queued)


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
        field_name="to" if data.to is not None else "recipients",
    )


def _authorize_publishable(principal: Principal, data: CallCreate) -> str:
    """A publishable key may only call as its own agent, over its own channels."""
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
        field_name="participants",
    )


async def get_call(session: AsyncSession, *, tenant_id: str, call_id: str) -> Call:
    call = await session.scalar(select(Call).where(Call.id == call_id, Call.tenant_id == tenant_id))
    if call is None:
        raise NotFound(f"No call {call_id} for this tenant.", code="call_not_found")
    return call


async def participants_of(session: AsyncSession, *, call_id: str) -> list[Participant]:
    stmt = select(Participant).where(Participant.call_id == call_id).order_by(Participant.position)
    return list((await session.scalars(stmt)).all())


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
    dialer to hang up the live ones. Ending an ended call changes nothing."""
    call = await get_call(session, tenant_id=tenant_id, call_id=call_id)
    now = utcnow()
    # Jobs first, guarded by their state: a job the dialer has already claimed is live, not
    # queued, and only participants whose job we took back here are canceled.
    unclaimed = list(
        await session.scalars(
            update(DialJob)
            .where(
                DialJob.id.in_(select(Participant.job_id).where(Participant.call_id == call.id)),
                DialJob.status == "waiting",
            )
            .values(status="canceled")
            .returning(DialJob.participant_id)
        )
    )
    canceled = (
        await session.execute(
            update(Participant)
            .where(
                Participant.call_id == call.id,
                Participant.status == "queued",
                or_(Participant.transport == "webrtc", Participant.id.in_(unclaimed)),
            )
            .values(status="canceled", end_reason="canceled", ended_at=now)
            .returning(Participant.hold_micros)
        )
    ).all()
    if canceled and call.campaign_id is not None:
        await campaign_queue.call_ended_by_user(
            session, call_id=call.id, campaign_id=call.campaign_id
        )
    held = sum(row.hold_micros for row in canceled)
    if held:
        await billing.release_holds(
            session, releases=[billing.Release(tenant_id, held, 0, call.id)]
        )
    await session.execute(
        update(Participant)
        .where(Participant.call_id == call.id, Participant.status.in_(LIVE_STATUSES))
        .values(hangup_requested_at=now)
    )
    live = await session.scalar(
        select(func.count())
        .select_from(Participant)
        .where(Participant.call_id == call.id, Participant.status.in_(LIVE_STATUSES))
    )
    if not live and call.ended_at is None:
        call.status = "canceled" if canceled else "completed"
        call.ended_at = now
    await session.flush()
    return call


async def queue_stats(session: AsyncSession, *, tenant_id: str) -> dict[str, int]:
    """The tenant's dial jobs by state: waiting, active, completed, failed."""
    rows = (
        await session.execute(
            select(DialJob.status, func.count())
            .where(DialJob.tenant_id == tenant_id)
            .group_by(DialJob.status)
        )
    ).all()
    counts = Counter({status: count for status, count in rows})
    return {name: counts[name] for name in ("waiting", "active", "completed", "failed")}
