"""What providers report (placements, answers, endings), applied from whichever process heard it."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.statuses import EndReason
from outdial.dialer.attempts import attempts_by_id, mark_answered, mark_placed
from outdial.dialer.settle import Ending, Progress, Settled, settle
from outdial.telephony.base import CallEvent


async def record_call_events(
    session: AsyncSession,
    *,
    events: Sequence[CallEvent],
    placed: Sequence[tuple[str, str, datetime]] = (),
) -> list[Settled]:
    """Apply what a provider reported (placements, answers and endings), from whichever
    process heard it: the dialer's own provider tasks or the API's carrier callbacks. Events
    of attempts already settled change nothing, so a repeated callback is harmless. An
    attempt that ends in this very batch is written once, its placement and answer with it.
    Answers the endings it settled."""
    ended = [e for e in events if e.kind == "ended"]
    ending_ids = {e.attempt_id for e in ended}
    answers = [e for e in events if e.kind == "answered"]
    await mark_placed(session, placed=[p for p in placed if p[0] not in ending_ids])
    await mark_answered(session, events=[e for e in answers if e.attempt_id not in ending_ids])
    progress = _progress_of(
        [p for p in placed if p[0] in ending_ids],
        [e for e in answers if e.attempt_id in ending_ids],
    )
    in_flight = {
        a.id: a for a in await attempts_by_id(session, attempt_ids=[e.attempt_id for e in ended])
    }
    return await settle(
        session,
        endings=[
            Ending(
                in_flight[e.attempt_id].job_id,
                e.attempt_id,
                end_reason(
                    e.end_reason,
                    answered_by=in_flight[e.attempt_id].answered_by
                    or (p.answered_by if (p := progress.get(e.attempt_id)) else None),
                ),
                e.at,
                e.talk_seconds,
                progress.get(e.attempt_id),
            )
            for e in ended
            if e.attempt_id in in_flight
        ],
    )


def _progress_of(
    placed: Sequence[tuple[str, str, datetime]], answers: Sequence[CallEvent]
) -> dict[str, Progress]:
    placements = {attempt_id: (call_id, at) for attempt_id, call_id, at in placed}
    answered = {e.attempt_id: e for e in answers}
    progress: dict[str, Progress] = {}
    for attempt_id in placements.keys() | answered.keys():
        call_id, placed_at = placements.get(attempt_id, (None, None))
        answer = answered.get(attempt_id)
        progress[attempt_id] = Progress(
            placed_at=placed_at,
            provider_call_id=call_id,
            answered_at=answer.at if answer else None,
            answered_by=("machine" if answer.machine else "human") if answer else None,
            connected_call_id=answer.provider_call_id if answer else None,
        )
    return progress


def end_reason(reported: str | None, *, answered_by: str | None) -> EndReason:
    """The one rule for why an attempt ended, whoever learnt of its end (the provider's
    events, a carrier's callback, reconciliation): as the provider reports it, except that a
    call a machine picked up ends as voicemail however its end is reported, and an end the
    provider gives no reason for is a carrier error."""
    if reported == EndReason.ANSWERED and answered_by == "machine":
        return EndReason.VOICEMAIL
    return EndReason(reported) if reported else EndReason.CARRIER_ERROR
