"""The one place a participant's status changes, and where a call's follows.

Every move of a participant (dialed, answered, back in the queue, ended, canceled) is written
by `change_participants`, which keeps to the transitions calls/statuses.py allows, tells the
participant's source (a campaign) of it and writes its webhook event: the single source of
status events. A call's end (`complete_finished_calls`) writes its own.

WebRTC participants have no dial job. Where the call's provider cannot see them join or leave
(`calls.webrtc_seen`, from `TelephonyProvider.sees_webrtc`), they end with their call
(`completed` / `call_ended`): when its last PSTN participant ends (`complete_finished_calls`),
or, for a call with no PSTN participant, when it is ended or has been open for the idle limit
(`end_idle_webrtc_calls`)."""

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, and_, case, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.models import Call, Participant
from outdial.calls.statuses import (
    FINAL_PARTICIPANT,
    PARTICIPANT_TRANSITIONS,
    CallStatus,
    EndReason,
    ParticipantStatus,
)
from outdial.db import TEXT, TIMESTAMP, one_of, update_rows, utcnow
from outdial.dialer import events
from outdial.dialer.sources import ParticipantChange, source

PARTICIPANTS = Participant.__table__
_P = PARTICIPANTS.c
_MOVABLE_FROM = {
    after: _P.status.in_(
        sorted({b for b, afters in PARTICIPANT_TRANSITIONS.items() if after in afters})
    )
    for after in ParticipantStatus
}
"""Per status, the statuses a participant may move to it from (the state machine's guard)."""
_NOT_FINAL = and_(*(_P.status != status for status in sorted(FINAL_PARTICIPANT)))
"""Spelt out, not NOT IN: SQLite's executemany takes no expanding parameter."""
_OPEN_WEBRTC = and_(_P.transport == literal_column("'webrtc'"), _P.ended_at.is_(None))
"""WebRTC participants not yet ended, as the partial index ix_participants_open_webrtc spells
them: a literal, because neither planner matches a bound parameter to an index's predicate."""
_PSTN = Participant.__table__.alias("pstn")


async def change_participants(
    session: AsyncSession, *, changes: Sequence[ParticipantChange]
) -> None:
    """Move participants to new statuses; a move the state machine does not allow from a
    participant's current status leaves that participant as it is. Changes alike (one status,
    one instant, nothing of their own: dials starting, cancellations) are one plain UPDATE;
    the others travel as arrays, one statement for them all."""
    if not changes:
        return
    alike: dict[tuple[Any, ...], list[ParticipantChange]] = defaultdict(list)
    each: list[ParticipantChange] = []
    for c in changes:
        if c.answered_at is None and c.duration_seconds is None and not c.cost_micros:
            # The instant is written only by a dial (dialed_at) or an end (ended_at).
            at = c.at if c.attempts > 0 or c.status.is_final else None
            alike[(c.status, at, c.attempts, c.end_reason)].append(c)
        else:
            each.append(c)
    for key, group in list(alike.items()):
        # Alone (an end at an instant of its own): it rides with the arrays, which write
        # everything but the attempt count.
        if len(group) == 1 and len(changes) > 1 and not group[0].attempts:
            each.extend(alike.pop(key))
    for (status, at, attempts, end_reason), group in alike.items():
        ids = [c.participant_id for c in group]
        await session.execute(
            update(PARTICIPANTS)
            .where(one_of(session, _P.id, ids), _MOVABLE_FROM[status])
            .values(_alike_values(status, at, attempts, end_reason))
        )
    await _change_each(session, each)
    await source().participants_changed(
        session, changes=[c for c in changes if c.campaign_id is not None]
    )
    await events.participants_updated(session, changes=changes)


def _alike_values(
    status: ParticipantStatus, at: Any, attempts: int, end_reason: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {"status": status}
    if attempts:
        values["attempts"] = _P.attempts + attempts
        # Dialed now; or its only attempt withdrawn: it was never dialed after all.
        values["dialed_at"] = (
            at if attempts > 0 else case((_P.attempts == 1, None), else_=_P.dialed_at)
        )
    if status.is_final:
        values["end_reason"] = end_reason
        values["ended_at"] = at
    return values


async def _change_each(session: AsyncSession, changes: list[ParticipantChange]) -> None:
    """Changes with values of their own (answers, ends with a duration and a charge)."""
    await update_rows(
        session,
        PARTICIPANTS,
        [
            {
                "id": c.participant_id,
                "status": str(c.status),
                "reason": c.end_reason and str(c.end_reason),
                "ended_at": c.at if c.status.is_final else None,
                "answered_at": c.answered_at,
                "duration": c.duration_seconds,
                "cost": c.cost_micros,
            }
            for c in changes
        ],
        fields={
            "id": TEXT,
            "status": TEXT,
            "reason": TEXT,
            "ended_at": TIMESTAMP,
            "answered_at": TIMESTAMP,
            "duration": Integer(),
            "cost": BigInteger(),
        },
        # Answered (from dialing), or ended: from any status not final.
        where=lambda row: (_P.id == row.id) & _NOT_FINAL,
        values=lambda row: {
            "status": row.status,
            "answered_at": func.coalesce(_P.answered_at, row.answered_at),
            "end_reason": func.coalesce(row.reason, _P.end_reason),
            "ended_at": func.coalesce(row.ended_at, _P.ended_at),
            "duration_seconds": func.coalesce(row.duration, _P.duration_seconds),
            "cost_micros": _P.cost_micros + row.cost,
        },
    )


async def start_calls(session: AsyncSession, *, call_ids: Collection[str]) -> None:
    """Calls whose first participant is being dialed are in progress."""
    await session.execute(
        update(Call.__table__)
        .where(one_of(session, Call.id, call_ids), Call.status == CallStatus.QUEUED)
        .values(status=CallStatus.IN_PROGRESS)
    )


async def complete_finished_calls(session: AsyncSession, *, call_ids: Collection[str]) -> None:
    """A call whose every participant is final has ended: `canceled` if someone ended it (any
    participant canceled), `completed` otherwise. Where the call's provider cannot see WebRTC
    participants, a call is over once its PSTN participants are: its WebRTC ones end with it
    (`call_ended`), so a call with no PSTN participant passed here ends (only
    `POST /v1/calls/{id}/end` and the idle sweep pass one). One UPDATE: calls without WebRTC
    participants cost no more than before."""
    if not call_ids:
        return
    now = utcnow()
    unfinished = select(Participant.id).where(
        Participant.call_id == Call.id,
        Participant.status.not_in(FINAL_PARTICIPANT),
        or_(Participant.transport != "webrtc", Call.webrtc_seen),
    )
    canceled = select(Participant.id).where(
        Participant.call_id == Call.id, Participant.status == ParticipantStatus.CANCELED
    )
    # Spelt out: a RETURNING clause names the updated table's columns unqualified, which a
    # subquery on participants would read as its own.
    open_webrtc = select(_P.id).where(_P.call_id == literal_column("calls.id"), _OPEN_WEBRTC)
    ended = (
        await session.execute(
            update(Call.__table__)
            .where(
                one_of(session, Call.id, call_ids), Call.ended_at.is_(None), ~unfinished.exists()
            )
            .values(
                status=case((canceled.exists(), CallStatus.CANCELED), else_=CallStatus.COMPLETED),
                ended_at=now,
            )
            .returning(Call.id, Call.tenant_id, Call.kind, open_webrtc.exists().label("webrtc"))
        )
    ).all()
    # Open WebRTC participants of an ended call are unseen ones (a provider that sees them
    # has ended them before the call could end). Their events come before the call's.
    await _end_webrtc(session, call_ids=[row.id for row in ended if row.webrtc], at=now)
    await events.calls_completed(
        session, ended=[(row.id, row.tenant_id, row.kind) for row in ended], at=now
    )


async def _end_webrtc(session: AsyncSession, *, call_ids: Collection[str], at: datetime) -> None:
    """End the open WebRTC participants of these calls, which have just ended."""
    if not call_ids:
        return
    ended = await session.execute(
        select(_P.id, _P.tenant_id).where(one_of(session, _P.call_id, call_ids), _OPEN_WEBRTC)
    )
    await change_participants(
        session,
        changes=[
            ParticipantChange(
                participant_id=participant_id,
                tenant_id=tenant_id,
                status=ParticipantStatus.COMPLETED,
                at=at,
                end_reason=EndReason.CALL_ENDED,
            )
            for participant_id, tenant_id in ended
        ],
    )


async def end_idle_webrtc_calls(
    session: AsyncSession, *, idle_limit: timedelta, now: datetime, limit: int = 500
) -> int:
    """End up to `limit` calls with no PSTN participant, whose provider cannot see their
    WebRTC participants, that have been open longer than `idle_limit`: nothing else would
    ever end them. Answers how many it ended."""
    any_pstn = select(_PSTN.c.id).where(_PSTN.c.call_id == _P.call_id, _PSTN.c.transport == "pstn")
    call_ids = set(
        await session.scalars(
            select(_P.call_id)
            .join(Call, Call.id == _P.call_id)
            .where(
                _OPEN_WEBRTC,
                ~Call.webrtc_seen,
                Call.created_at < now - idle_limit,
                ~any_pstn.exists(),
            )
            .limit(limit)
        )
    )
    await complete_finished_calls(session, call_ids=call_ids)
    return len(call_ids)
