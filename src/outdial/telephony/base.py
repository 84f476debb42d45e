"""The one interface every telephony provider implements.

A provider places calls and reports what happens to them as `CallEvent`s through the sink it
was built with: from its own tasks (simulated, SIP) or from the HTTP callbacks its carrier
sends (Plivo, Twilio). The dialer never learns an outcome any other way, so every provider
drives a participant's status identically."""

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

EndReason = Literal[
    "answered", "voicemail", "busy", "no_answer", "rejected", "invalid_number", "carrier_error"
]


@dataclass(frozen=True, slots=True)
class DialRequest:
    """One attempt to reach one number. `attempt_id` is unique per attempt and is what the
    provider is asked about when the dialer has to reconcile a call of unknown fate."""

    attempt_id: str
    to: str
    from_number: str
    ring_timeout_seconds: int
    voicemail_behavior: str = "hangup"


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


EventSink = Callable[[CallEvent], Awaitable[None]]


class TelephonyProvider(ABC):
    name: ClassVar[str]

    def __init__(self, events: EventSink) -> None:
        self.events = events

    @abstractmethod
    async def place(self, request: DialRequest) -> str:
        """Hand the call to the carrier; answers the provider's id for it. Returns once the
        carrier has it; what follows arrives as events."""

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
