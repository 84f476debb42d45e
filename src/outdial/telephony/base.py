"""The one interface every telephony provider implements.

A provider places calls and reports what happens to them as `CallEvent`s through the sink it
was built with: from its own tasks (simulated, SIP) or from the HTTP callbacks its carrier
sends (Plivo, Twilio). The dialer never learns an outcome any other way, so every provider
drives a participant's status identically."""

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

EndReason = Literal[
    "answered",
    "voicemail",
    "busy",
    "no_answer",
    "rejected",
    "invalid_number",
    "carrier_error",
    "agent_unavailable",
]
"""`agent_unavailable`: answered, but the agent's stream could not be reached or sent no audio
within 2 s of the answer, so the call was hung up (a person answered and nobody spoke)."""

AnsweredBy = Literal["human", "machine", "unknown"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """What an agent is told of the call it serves (all known at dial time): its media
    stream's `start.customParameters`, or the metadata of its dispatch to a room."""

    call_id: str
    participant_id: str
    attempt_id: str
    agent_id: str
    to: str
    from_number: str
    campaign_id: str | None = None
    batch_id: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    """The call's variables merged with the participant's metadata (the participant wins)."""

    def custom_parameters(self, answered_by: AnsweredBy) -> dict[str, str]:
        """`start.customParameters` as the contract lists them, every value a string (as
        Twilio's are): `variables` is one JSON string; an absent campaign or batch id is left
        out."""
        parameters = {
            "call_id": self.call_id,
            "participant_id": self.participant_id,
            "attempt_id": self.attempt_id,
            "agent_id": self.agent_id,
            "to": self.to,
            "from": self.from_number,
            "answered_by": answered_by,
            "campaign_id": self.campaign_id,
            "batch_id": self.batch_id,
            "variables": json.dumps(dict(self.variables), separators=(",", ":")),
        }
        return {name: value for name, value in parameters.items() if value is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamTarget(CallContext):
    """Where an answered call's audio goes: the agent's WebSocket (`stream_url`) and the
    secret its upgrade request is signed with (the provider adds `answered_by` to what the
    agent is told)."""

    url: str
    secret: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomTarget(CallContext):
    """The room a dial joins, for a provider whose calls are rooms (`sees_webrtc`): the
    dialed person joins `room_name` as `participant_id`, and the agent named `agent_name` (if
    any) is sent there, told of the call what a stream's `customParameters` tell."""

    room_name: str
    agent_name: str | None = None


@dataclass(frozen=True, slots=True)
class DialRequest:
    """One attempt to reach one number. `attempt_id` is unique per attempt and is what the
    provider is asked about when the dialer has to reconcile a call of unknown fate."""

    attempt_id: str
    to: str
    from_number: str
    ring_timeout_seconds: int
    voicemail_behavior: str = "hangup"
    stream: StreamTarget | None = None
    """The agent's stream, when its agent has a `stream_url`: the answered call's audio is
    carried there (providers that carry media: sip, simulated; Plivo and Twilio read it from
    the database when their answer callback comes). None: signalling only, as before."""
    room: RoomTarget | None = None
    """The call's room, for a provider that puts calls in rooms (`sees_webrtc`: livekit)."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    attempt_id: str
    kind: Literal["answered", "ended"]
    at: datetime
    end_reason: EndReason | None = None
    """Set on `ended`: why the call ended (`answered` means it was answered and hung up)."""
    talk_seconds: int = 0
    """Set on `ended`: seconds from answer to hang-up (0 if never answered)."""
    machine: bool = False
    """Set on `answered`: a machine (voicemail) picked up; the call then ends as `voicemail`."""
    provider_call_id: str | None = None
    """Set on `answered` when the carrier names the connected call differently from the id
    `place` answered (Plivo's CallUUID): hang-ups and lookups use it from then on."""


@dataclass(frozen=True, slots=True)
class AttemptState:
    """What a provider knows of an attempt, for reconciliation after a dialer crash."""

    status: Literal["never_received", "live", "ended", "unknown"]
    answered_at: datetime | None = None
    end: CallEvent | None = None


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """What a provider whose calls are rooms (`sees_webrtc`) reports of a room, from the
    webhooks its media server sends: a participant joined or left, or the room closed. A PSTN
    leg the provider dialed names its attempt; a WebRTC participant is named by the identity
    its join token carries."""

    kind: Literal["joined", "left", "closed"]
    room: str
    at: datetime
    identity: str | None = None
    attempt_id: str | None = None
    """Set for a PSTN leg this provider dialed (its participant carries the attempt id)."""
    answered: bool = False
    """Set on a leg's `left`: its call status says it had been answered."""
    end_reason: EndReason | None = None
    """Set on a leg's `left`: why it left, as far as the media server tells, were it never
    answered (the dialer that placed it learns the precise SIP status itself)."""


EventSink = Callable[[CallEvent], Awaitable[None]]


class CarrierUnreachable(Exception):
    """Raised by `place` when the carrier never took the call: nothing answered the dial
    request at all (no SIP response before Timer B, an ICMP error, a transport or DNS failure,
    no connection to a REST API). The number was not dialed, so this is no outcome of the
    call: the provider's `lookup` answers `never_received` for the attempt, the dialer
    withdraws it and dials the job again after a backoff, and its circuit breaker counts it.
    The message says what happened (for the breaker's log line)."""


class TelephonyProvider(ABC):
    name: ClassVar[str]
    sees_webrtc: ClassVar[bool] = False
    """Whether the provider puts each call in a room that its WebRTC participants join too,
    and reports them joining and leaving (livekit): its dials carry their room
    (`DialRequest.room`), and its WebRTC participants move queued → in_progress → completed
    as the PSTN ones do. Where it does not (every other provider), a WebRTC participant
    ends with its call (dialer/status.py)."""

    def __init__(self, events: EventSink) -> None:
        self.events = events

    @abstractmethod
    async def place(self, request: DialRequest) -> str:
        """Hand the call to the carrier; answers the provider's id for it. Returns once the
        carrier has it (it answered the request); what follows arrives as events. Raises
        `CarrierUnreachable` if the carrier never took it (then no event follows)."""

    @abstractmethod
    async def hangup(self, attempt_id: str, *, provider_call_id: str | None = None) -> None:
        """End a live call; its `ended` event follows as usual. Unknown attempts are ignored.
        `provider_call_id` is the carrier's id for it as last stored, when known."""

    @abstractmethod
    async def lookup(self, attempt_id: str, *, provider_call_id: str | None = None) -> AttemptState:
        """Tell what became of an attempt this or an earlier dialer process placed;
        `provider_call_id` is the carrier's id for it as last stored, when known."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release what the provider holds (sockets, HTTP clients, tasks)."""
