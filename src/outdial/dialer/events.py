"""The webhook events of participants' and calls' status changes (API.md, "Events"), written
by the code that makes the changes (dialer/status.py) in their transaction: no change is
committed without its event, and none is sent for a change rolled back."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.billing.service import from_micros
from outdial.calls.models import Call, Participant
from outdial.calls.schemas import ParticipantOut
from outdial.calls.views import call_out
from outdial.db import one_of
from outdial.dialer.sources import ParticipantChange
from outdial.webhooks.outbox import EventType, NewEvent, emit_events, subscriptions

UPDATED = EventType.CALL_PARTICIPANT_UPDATED


_P = Participant.__table__.c
_SHOWN = tuple(ParticipantOut.model_fields)
_COLUMNS = [_P.cost_micros if name == "cost" else _P[name] for name in _SHOWN]
"""`ParticipantOut`'s fields as the participants table holds them, in its order (its field
names are the table's column names, but for `cost`, which the table keeps in micros)."""
_READ = select(*_COLUMNS, _P.call_id)


def participant_data(row: Sequence[Any]) -> dict[str, Any]:
    """A participant as `GET /v1/calls/{id}` shows it (`participant_out`), plus `call_id`,
    from a row of `_READ`: the same JSON once serialised, at a fraction of the cost of an
    ORM object and a pydantic model per event (two or three events a dial)."""
    data = dict(zip(_SHOWN, row, strict=False))
    data["cost"] = from_micros(data["cost"])
    data["call_id"] = row[-1]
    return data


async def participants_updated(
    session: AsyncSession, *, changes: Sequence[ParticipantChange]
) -> None:
    """`call.participant.updated` for each change written, to the tenants that take it: the
    participant as `GET /v1/calls/{id}` shows it now, with its `call_id`."""
    subs = await subscriptions(session, tenant_ids={c.tenant_id for c in changes})
    wanted = {c.participant_id: c for c in changes if subs.wants(c.tenant_id, UPDATED)}
    if not wanted:
        return
    events = []
    for row in await session.execute(_READ.where(one_of(session, _P.id, list(wanted)))):
        data = participant_data(row)
        change = wanted[data["id"]]
        # A move the state machine refused changed nothing: nothing to report.
        if data["status"] == change.status:
            events.append(
                NewEvent(
                    tenant_id=change.tenant_id,
                    type=UPDATED,
                    data=data,
                    ordering_key=data["call_id"],
                    occurred_at=change.at,
                )
            )
    await emit_events(session, events)


async def calls_completed(
    session: AsyncSession, *, ended: Sequence[tuple[str, str, str]], at: datetime
) -> None:
    """`call.completed` for each (call id, tenant id, kind) that has just ended, and
    `batch.completed` for a batch's (its call is the batch): the call as `GET /v1/calls/{id}`
    answers it, with its merged `post_call`."""
    subs = await subscriptions(session, tenant_ids={tenant for _, tenant, _ in ended})
    kinds = {
        call_id: kind
        for call_id, tenant, kind in ended
        if subs.wants(tenant, EventType.CALL_COMPLETED)
        or (kind == "batch" and subs.wants(tenant, EventType.BATCH_COMPLETED))
    }
    if not kinds:
        return
    calls = list(
        await session.scalars(
            select(Call)
            .where(one_of(session, Call.id, list(kinds)))
            .execution_options(populate_existing=True)
        )
    )
    participants: dict[str, list[Participant]] = {c.id: [] for c in calls}
    for p in await session.scalars(
        select(Participant)
        .where(one_of(session, Participant.call_id, list(kinds)))
        .order_by(Participant.call_id, Participant.position)
        .execution_options(populate_existing=True)
    ):
        participants[p.call_id].append(p)
    events = []
    for call in calls:
        data = call_out(call, participants[call.id]).model_dump(mode="json")
        types = [EventType.CALL_COMPLETED]
        if kinds[call.id] == "batch":
            types.append(EventType.BATCH_COMPLETED)
        events.extend(
            NewEvent(call.tenant_id, kind, data, ordering_key=call.id, occurred_at=at)
            for kind in types
            if subs.wants(call.tenant_id, kind)
        )
    await emit_events(session, events)
