"""Calls and participants as the API shows them: what GET /v1/calls/{id} answers, and what
webhooks carry (events send the same objects)."""

from outdial.billing.service import from_micros
from outdial.calls.models import Call, Participant
from outdial.calls.schemas import CallOut, CallSummary, ParticipantOut
from outdial.calls.webrtc import room_name


def summary_out(call: Call) -> CallSummary:
    return CallSummary(
        id=call.id,
        room_name=room_name(call.id),
        kind=call.kind,
        status=call.status,
        agent_id=call.agent_id,
        batch_id=call.batch_id,
        campaign_id=call.campaign_id,
        from_number=call.from_number,
        metadata=call.call_metadata,
        variables=call.variables,
        post_call=call.post_call,
        calling_window=call.calling_window,
        retry=call.retry,
        ring_timeout_seconds=call.ring_timeout_seconds,
        state_rules=call.state_rules,
        max_attempts_per_24h=call.max_attempts_per_24h,
        created_at=call.created_at,
        ended_at=call.ended_at,
    )


def participant_out(p: Participant) -> ParticipantOut:
    return ParticipantOut(
        id=p.id,
        transport=p.transport,
        identity=p.identity,
        from_number=p.from_number,
        status=p.status,
        end_reason=p.end_reason,
        attempts=p.attempts,
        telephony_leg_id=p.telephony_leg_id,
        job_id=p.job_id,
        metadata=p.participant_metadata,
        duration_seconds=p.duration_seconds,
        cost=from_micros(p.cost_micros),
        created_at=p.created_at,
        dialed_at=p.dialed_at,
        answered_at=p.answered_at,
        ended_at=p.ended_at,
    )


def call_out(call: Call, participants: list[Participant]) -> CallOut:
    counts: dict[str, int] = {}
    for p in participants:
        counts[p.status] = counts.get(p.status, 0) + 1
    return CallOut(
        **summary_out(call).model_dump(),
        participant_counts=counts,
        participants=[participant_out(p) for p in participants],
    )
