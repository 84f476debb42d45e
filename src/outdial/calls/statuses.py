"""The state machines of calls and participants, with the transitions each allows."""

from enum import StrEnum


class ParticipantStatus(StrEnum):
    """The seed's flow, plus `canceled`: queued → dialing → in_progress → completed | failed."""

    QUEUED = "queued"
    DIALING = "dialing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_PARTICIPANT


FINAL_PARTICIPANT = frozenset(
    {ParticipantStatus.COMPLETED, ParticipantStatus.FAILED, ParticipantStatus.CANCELED}
)
LIVE_PARTICIPANT = frozenset({ParticipantStatus.DIALING, ParticipantStatus.IN_PROGRESS})

PARTICIPANT_TRANSITIONS: dict[ParticipantStatus, frozenset[ParticipantStatus]] = {
    # Dialed; or ended before any dial (canceled, a DNC re-check, a rule that forbids it; a
    # WebRTC participant ends with its call). In progress: a WebRTC participant joined its
    # call's room, which only a provider that sees WebRTC participants reports (livekit:
    # `TelephonyProvider.sees_webrtc`; no other sends such a change).
    ParticipantStatus.QUEUED: frozenset(
        {ParticipantStatus.DIALING, ParticipantStatus.IN_PROGRESS, *FINAL_PARTICIPANT}
    ),
    # Answered; ended unanswered; or back in the queue (a retry, or an attempt the
    # provider never received).
    ParticipantStatus.DIALING: frozenset(
        {ParticipantStatus.IN_PROGRESS, ParticipantStatus.QUEUED, *FINAL_PARTICIPANT}
    ),
    # Ended; or queued again for a retry its policy asks for (e.g. on voicemail).
    ParticipantStatus.IN_PROGRESS: frozenset({ParticipantStatus.QUEUED, *FINAL_PARTICIPANT}),
    ParticipantStatus.COMPLETED: frozenset(),
    ParticipantStatus.FAILED: frozenset(),
    ParticipantStatus.CANCELED: frozenset(),
}


class EndReason(StrEnum):
    """Why a participant ended (API.md, "Calls")."""

    ANSWERED = "answered"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    INVALID_NUMBER = "invalid_number"
    CARRIER_ERROR = "carrier_error"
    DNC = "dnc"
    CANCELED = "canceled"
    LOST = "lost"
    AGENT_UNAVAILABLE = "agent_unavailable"
    NOT_PERMITTED = "not_permitted"
    CALL_ENDED = "call_ended"
    """A WebRTC participant that ended with its call: the provider cannot see WebRTC
    participants join or leave (`TelephonyProvider.sees_webrtc`), so whether and how long it
    was in the room is unknown. Its status is `completed`; it costs nothing."""


ANSWERED_BY_PERSON = frozenset({EndReason.ANSWERED, EndReason.AGENT_UNAVAILABLE})
"""End reasons of a call a person picked up: `agent_unavailable` too (nobody spoke to them:
an abandoned call)."""

REACHED = frozenset({EndReason.ANSWERED, EndReason.VOICEMAIL})
"""End reasons of a call someone (or a machine) picked up: billed, and its participant
completed. Every other end reason fails the participant (or cancels it)."""


class CallStatus(StrEnum):
    """queued → in_progress → completed | canceled (canceled: someone ended it)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELED = "canceled"


CALL_TRANSITIONS: dict[CallStatus, frozenset[CallStatus]] = {
    CallStatus.QUEUED: frozenset(
        {CallStatus.IN_PROGRESS, CallStatus.COMPLETED, CallStatus.CANCELED}
    ),
    CallStatus.IN_PROGRESS: frozenset({CallStatus.COMPLETED, CallStatus.CANCELED}),
    CallStatus.COMPLETED: frozenset(),
    CallStatus.CANCELED: frozenset(),
}
