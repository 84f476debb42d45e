"""What a provider whose calls are rooms (`sees_webrtc`: livekit) reports of them, from its
media server's webhooks (`RoomEvent`s), written by the API process.

A PSTN leg that left its room ends its attempt: answered, with its talk time, if it had been
answered; otherwise for the reason the media server gives, unless the dialer that placed it is
still alive, which hears the precise SIP status from its own dial request (the webhook would
only race it with a coarser reason). A WebRTC participant moves queued → in_progress when it
joins the call's room and → completed when it leaves, so a mixed call completes when its last
participant has left; a room that closed ends those still in it, and, once no PSTN participant
of the call is waiting or live, those that never came (failed, no_answer)."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.models import Participant
from outdial.calls.statuses import FINAL_PARTICIPANT, EndReason, ParticipantStatus
from outdial.calls.webrtc import call_of_room
from outdial.db import one_of, utcnow
from outdial.dialer.leases import held_by_placer
from outdial.dialer.models import DialAttempt
from outdial.dialer.outcomes import record_call_events
from outdial.dialer.settle import report_settled
from outdial.dialer.sources import ParticipantChange
from outdial.dialer.status import change_participants, complete_finished_calls, start_calls
from outdial.dialer.statuses import IN_FLIGHT
from outdial.telephony.base import CallEvent, RoomEvent

WEBRTC = "webrtc"


async def record_room_events(session: AsyncSession, *, events: Sequence[RoomEvent]) -> None:
    """Apply what the provider reported of its rooms; a repeated event changes nothing."""
    await _settle_legs(session, [e for e in events if e.attempt_id is not None])
    for event in events:
        if event.attempt_id is not None:
            continue
        call_id = call_of_room(event.room)
        if call_id is None:
            continue  # not a call's room (a batch recipient's, or another application's)
        if event.kind == "joined" and event.identity:
            await _webrtc_joined(session, call_id=call_id, identity=event.identity, at=event.at)
        elif event.kind == "left" and event.identity:
            await _webrtc_left(session, call_id=call_id, identity=event.identity, at=event.at)
        elif event.kind == "closed":
            await _room_closed(session, call_id=call_id, at=event.at)


async def _settle_legs(session: AsyncSession, legs: Sequence[RoomEvent]) -> None:
    """End the attempts of PSTN legs that left their rooms (those still in flight)."""
    if not legs:
        return
    answered_at = {
        row.id: row.answered_at
        for row in await session.execute(
            select(DialAttempt.id, DialAttempt.answered_at).where(
                one_of(session, DialAttempt.id, [e.attempt_id for e in legs]),
                DialAttempt.status.in_(IN_FLIGHT),
            )
        )
    }
    unanswered = [
        e.attempt_id
        for e in legs
        if e.attempt_id in answered_at and not (answered_at[e.attempt_id] or e.answered)
    ]
    heard_by_dialer = await held_by_placer(session, attempt_ids=unanswered, now=utcnow())
    endings: list[CallEvent] = []
    for e in legs:
        assert e.attempt_id is not None
        if e.attempt_id not in answered_at or e.attempt_id in heard_by_dialer:
            continue
        answered = answered_at[e.attempt_id]
        if answered is not None:
            # The webhook's time has whole seconds only.
            at = max(e.at, answered)
            talk = int((at - answered).total_seconds())
            endings.append(CallEvent(e.attempt_id, "ended", at, "answered", talk))
        elif e.answered:
            # Answered while no dialer listened for it (its dialer died as it rang): when is
            # not known, so no talk time either.
            endings.append(CallEvent(e.attempt_id, "ended", e.at, "answered"))
        else:
            endings.append(CallEvent(e.attempt_id, "ended", e.at, e.end_reason))
    report_settled(await record_call_events(session, events=endings))


async def _webrtc_participants(
    session: AsyncSession,
    *,
    call_id: str,
    statuses: Sequence[ParticipantStatus],
    identity: str | None = None,
) -> list[Participant]:
    query = select(Participant).where(
        Participant.call_id == call_id,
        Participant.transport == WEBRTC,
        one_of(session, Participant.status, [str(s) for s in statuses]),
    )
    if identity is not None:
        query = query.where(Participant.identity == identity)
    return list(await session.scalars(query))


async def _webrtc_joined(
    session: AsyncSession, *, call_id: str, identity: str, at: datetime
) -> None:
    joined = await _webrtc_participants(
        session, call_id=call_id, identity=identity, statuses=[ParticipantStatus.QUEUED]
    )
    if not joined:
        return
    await change_participants(
        session,
        changes=[
            ParticipantChange(
                participant_id=p.id,
                tenant_id=p.tenant_id,
                status=ParticipantStatus.IN_PROGRESS,
                at=at,
                answered_at=at,
            )
            for p in joined
        ],
    )
    await start_calls(session, call_ids={call_id})


async def _webrtc_left(session: AsyncSession, *, call_id: str, identity: str, at: datetime) -> None:
    present = await _webrtc_participants(
        session,
        call_id=call_id,
        identity=identity,
        # Queued: its joining was never heard of, but it was there.
        statuses=[ParticipantStatus.IN_PROGRESS, ParticipantStatus.QUEUED],
    )
    await _complete(session, present, at=at)
    await complete_finished_calls(session, call_ids={call_id})


async def _room_closed(session: AsyncSession, *, call_id: str, at: datetime) -> None:
    await _complete(
        session,
        await _webrtc_participants(
            session, call_id=call_id, statuses=[ParticipantStatus.IN_PROGRESS]
        ),
        at=at,
    )
    pstn_unfinished = await session.scalar(
        select(Participant.id)
        .where(
            Participant.call_id == call_id,
            Participant.transport != WEBRTC,
            Participant.status.not_in(FINAL_PARTICIPANT),
        )
        .limit(1)
    )
    if pstn_unfinished is None:
        # Nothing more happens on this call: who never came will not be heard of.
        never_came = await _webrtc_participants(
            session, call_id=call_id, statuses=[ParticipantStatus.QUEUED]
        )
        await change_participants(
            session,
            changes=[
                ParticipantChange(
                    participant_id=p.id,
                    tenant_id=p.tenant_id,
                    status=ParticipantStatus.FAILED,
                    at=at,
                    end_reason=EndReason.NO_ANSWER,
                )
                for p in never_came
            ],
        )
    await complete_finished_calls(session, call_ids={call_id})


async def _complete(
    session: AsyncSession, participants: Sequence[Participant], *, at: datetime
) -> None:
    """WebRTC participants that left: completed, for as long as they were in the room."""
    await change_participants(
        session,
        changes=[
            ParticipantChange(
                participant_id=p.id,
                tenant_id=p.tenant_id,
                status=ParticipantStatus.COMPLETED,
                at=at,
                end_reason=EndReason.ANSWERED,
                answered_at=p.answered_at or at,
                duration_seconds=max(0, int((at - (p.answered_at or at)).total_seconds())),
            )
            for p in participants
        ],
    )
