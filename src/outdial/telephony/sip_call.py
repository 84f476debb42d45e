"""One call of the `sip` provider, from the UAC side: its INVITE dialog and the task that runs
it — ring (CANCEL on the ring timeout or a hang-up, digest credentials on a challenge),
confirm the dialog on a 2xx, relay its media, and hang up with BYE either way.

A call the trunk never took — no response at all to its INVITE before Timer B, or a transport
error (ICMP, a failed send) first — has no outcome: the number was not dialed. It ends
without an event, and `taken` (which `place` awaits) raises CarrierUnreachable."""

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pydantic import SecretStr

from outdial.telephony import sip_transaction
from outdial.telephony.base import (
    CallEvent,
    CarrierUnreachable,
    DialRequest,
    EndReason,
    EventSink,
)
from outdial.telephony.media.agent import StreamEnd
from outdial.telephony.media.bridge import RtpBridge
from outdial.telephony.media.sdp import parse_answer, sdp_offer
from outdial.telephony.sip_message import (
    SipMessage,
    UnsupportedChallenge,
    digest_credentials,
    parse_challenge,
    uri_of,
)
from outdial.telephony.sip_transaction import (
    ClientTransaction,
    Inbox,
    Sender,
    Signal,
)
from outdial.telephony.sip_transport import hostport

log = logging.getLogger(__name__)

NO_MEDIA_PORT = 9
"""The port the SDP offer of a call without a stream names (discard): nothing listens."""
ATTEMPT_HEADER = "X-Outdial-Attempt"
USER_AGENT = "outdial"

OUTCOMES: dict[int, EndReason] = {
    486: "busy",
    600: "busy",
    603: "rejected",
    480: "no_answer",
    408: "no_answer",
    404: "invalid_number",
    484: "invalid_number",
}

_STREAM_SIGNALS = {
    StreamEnd.AGENT_CLOSED: Signal.AGENT_CLOSED,
    StreamEnd.AGENT_UNAVAILABLE: Signal.AGENT_UNAVAILABLE,
}


def outcome_of(status: int, *, canceled: bool) -> EndReason:
    """The end reason a final non-2xx response means (487 only answers our own CANCEL)."""
    if status == 487 and canceled:
        return "no_answer"
    return OUTCOMES.get(status, "carrier_error")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a digest challenge from the trunk is answered with."""

    username: str
    password: SecretStr


class UserAgent(Sender, Protocol):
    """What a call needs of the user agent that placed it."""

    events: EventSink
    credentials: Credentials | None

    @property
    def local_address(self) -> tuple[str, int]: ...

    def start(self, request: SipMessage, inbox: Inbox) -> ClientTransaction: ...

    def call_ended(self, call: "Call", end: CallEvent) -> None: ...

    def call_not_taken(self, call: "Call") -> None: ...


@dataclass(eq=False)
class Call:
    """One attempt's INVITE dialog, from the UAC side, and the task that runs it."""

    ua: UserAgent
    request: DialRequest
    trunk: str
    """The trunk's host:port, as configured."""
    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    inbox: Inbox = field(default_factory=asyncio.Queue)
    cseq: int = 1
    invite: ClientTransaction | None = None
    task: asyncio.Task[None] | None = None
    remote_to: str | None = None
    """The To header with the far end's tag, once the dialog exists."""
    remote_target: str | None = None
    route_set: list[str] = field(default_factory=list)
    cancel_wanted: bool = False
    cancel_sent: bool = False
    answered_at: datetime | None = None
    hung_up_at: datetime | None = None
    ended: bool = False
    media: RtpBridge | None = None
    """The call's RTP relay to its agent, when its dial carries a stream."""
    media_refused: bool = False
    """The answer offered no audio the relay could carry: hung up as a carrier error."""
    taken: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    """Done once the trunk has taken the call (it answered the INVITE with anything but a
    challenge we answer); CarrierUnreachable if it never did."""
    placed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once `place` has returned: the call's events wait for it, so that whoever placed
    the call hears that the carrier took it before it hears how it went."""

    @property
    def from_header(self) -> str:
        return f"<{self.local_uri}>;tag={self.local_tag}"

    async def open_media(self) -> None:
        """Bind the call's RTP socket, when its dial carries a stream (before the INVITE: the
        offer names its port)."""
        if self.request.stream is None:
            return
        self.media = RtpBridge(
            self.request.stream,
            on_end=lambda end: self.inbox.put_nowait(_STREAM_SIGNALS[end]),
        )
        await self.media.open(self.ua.local_address[0])

    def start(self) -> None:
        """Send the INVITE and run the call in a task of its own."""
        self.invite = self.ua.start(self._invite(), self.inbox)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        end_reason: EndReason = "carrier_error"
        taken = True
        try:
            final = await self._ring()
            taken = self.taken.done()
            if not taken:
                return
            if final is not None and final.status < 300:
                answered_at = self._confirm(final)
                end_reason = "answered"
                await self._report(CallEvent(self.request.attempt_id, "answered", answered_at))
                self._connect_media(final)
                end_reason = await self._talk()
            elif final is not None:
                end_reason = outcome_of(final.status, canceled=self.cancel_sent)
            elif self.cancel_sent:
                end_reason = "no_answer"  # CANCELed, and no final response ever came
        except Exception:
            log.exception("SIP call %s failed", self.call_id)
        finally:
            if self.media is not None:
                self.media.close()
            if taken:
                await self._end(end_reason)
            else:
                self._not_taken()

    async def _ring(self) -> SipMessage | None:
        """Wait for the INVITE's final response. The ring timeout or a hang-up sends CANCEL
        (once the far end has sent a provisional response, RFC 3261 §9.1); a digest challenge
        is answered once. None when the trunk never answered (Timer B, or a transport error
        first) or the CANCELed INVITE got no final response within 64*T1 (or the CANCEL could
        not reach the trunk)."""
        loop = asyncio.get_running_loop()
        deadline: float | None = loop.time() + self.request.ring_timeout_seconds
        challenges_answered: set[int] = set()
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(self.inbox.get(), timeout)
            except TimeoutError:
                if self.cancel_sent:
                    return None
                item = Signal.HANGUP  # rang past the ring timeout
            if item in (Signal.TIMEOUT, Signal.UNREACHABLE):
                return None
            if item is Signal.HANGUP:
                self.cancel_wanted = True
                deadline = self._cancel_if_ringing()
                continue
            if not isinstance(item, SipMessage) or item.cseq[1] == "CANCEL":
                continue  # a BYE before the dialog exists (answered 481), our CANCEL's 200
            if item.status < 200:
                self._took()
                deadline = self._cancel_if_ringing() if self.cancel_wanted else deadline
                continue
            if item.status in (401, 407) and not self.cancel_wanted:
                if item.status not in challenges_answered and self._authenticate(item):
                    challenges_answered.add(item.status)
                    continue
            self._took()
            return item

    def _took(self) -> None:
        if not self.taken.done():
            self.taken.set_result(None)

    def _not_taken(self) -> None:
        """Nothing came back for the INVITE: the call ends with no outcome, as if never
        placed, and `taken` says why."""
        self.ended = True
        invite = self.invite
        if invite is not None and invite.error is not None:
            why = f"the trunk {self.trunk} is unreachable: {invite.error}"
        else:
            timeout = sip_transaction.TRANSACTION_TIMEOUT
            why = f"the trunk {self.trunk} answered nothing in {timeout:g} s"
        self._abandon_invite()
        self.ua.call_not_taken(self)
        self.taken.set_exception(CarrierUnreachable(why))

    def _cancel_if_ringing(self) -> float | None:
        """Send CANCEL if it may be sent now; answers the new deadline for the INVITE's final
        response (None: wait for the provisional response, or for Timer B)."""
        if self.cancel_sent:
            return asyncio.get_running_loop().time() + sip_transaction.TRANSACTION_TIMEOUT
        if self.invite is None or not self.invite.proceeding:
            return None
        invite = self.invite.request
        headers = [
            ("Via", invite.values("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", invite.header("To") or ""),
            ("Call-ID", self.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
            *(("Route", route) for route in invite.values("Route")),
            ("User-Agent", USER_AGENT),
        ]
        # Its failure (Timer F, or the trunk unreachable) reaches `_ring`: no final response
        # will come for the INVITE either.
        self.ua.start(SipMessage(headers=headers, method="CANCEL", uri=invite.uri), self.inbox)
        self.cancel_sent = True
        return asyncio.get_running_loop().time() + sip_transaction.TRANSACTION_TIMEOUT

    def _authenticate(self, challenge_response: SipMessage) -> bool:
        """Send the INVITE again with credentials for this challenge: same Call-ID and tag,
        CSeq + 1, a new branch. False when we cannot (no credentials, unknown scheme)."""
        credentials = self.ua.credentials
        if credentials is None or self.invite is None:
            log.warning("SIP trunk asked %s for credentials; none are configured", self.call_id)
            return False
        is_proxy = challenge_response.status == 407
        header = challenge_response.header("Proxy-Authenticate" if is_proxy else "WWW-Authenticate")
        try:
            challenge = parse_challenge(header or "")
        except UnsupportedChallenge as exc:
            log.warning("SIP trunk challenge for %s cannot be answered: %s", self.call_id, exc)
            return False
        previous = self.invite.request
        self.cseq += 1
        authorization = digest_credentials(
            challenge,
            method="INVITE",
            uri=previous.uri or "",
            username=credentials.username,
            password=credentials.password.get_secret_value(),
            cnonce=secrets.token_hex(8),
        )
        header_name = "Proxy-Authorization" if is_proxy else "Authorization"
        # Credentials for the other challenge (a proxy's, then the trunk's) still hold.
        kept = [
            (name, value)
            for name, value in previous.headers
            if name in ("Authorization", "Proxy-Authorization") and name != header_name
        ]
        invite = self._invite()
        invite.headers[-1:-1] = [*kept, (header_name, authorization)]
        self.invite = self.ua.start(invite, self.inbox)
        return True

    def _invite(self) -> SipMessage:
        local = self.ua.local_address
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", self.from_header),
            ("To", f"<{self.remote_uri}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} INVITE"),
            ("Contact", f"<sip:{self.request.from_number}@{hostport(*local)}>"),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
            ("User-Agent", USER_AGENT),
            (ATTEMPT_HEADER, self.request.attempt_id),
            ("Content-Type", "application/sdp"),
        ]
        port = self.media.port if self.media is not None else NO_MEDIA_PORT
        return SipMessage(
            headers=headers,
            body=sdp_offer(local[0], port),
            method="INVITE",
            uri=self.remote_uri,
        )

    def _via(self) -> str:
        local = hostport(*self.ua.local_address)
        return f"SIP/2.0/UDP {local};branch=z9hG4bK{secrets.token_hex(8)};rport"

    def _confirm(self, ok: SipMessage) -> datetime:
        """The dialog from a 2xx: the far end's tag and target, the route set; then ACK it
        (a new transaction, RFC 3261 §13.2.2.4), again for each retransmitted 2xx. Answers
        when the call was answered."""
        answered_at = self.answered_at = _now()
        self.remote_to = ok.header("To") or ""
        contact = ok.header("Contact")
        self.remote_target = uri_of(contact) if contact else self.remote_uri
        self.route_set = list(reversed(ok.values("Record-Route")))
        ack = self._in_dialog("ACK", self.invite.request.cseq[0] if self.invite else 1)
        if self.invite is not None:
            self.invite.ack = ack
        self.ua.send(ack)
        if self.cancel_wanted:
            self.inbox.put_nowait(Signal.HANGUP)  # answered as our CANCEL crossed: hang up
        return answered_at

    def _in_dialog(self, method: str, cseq: int) -> SipMessage:
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", self.from_header),
            ("To", self.remote_to or ""),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            *(("Route", route) for route in self.route_set),
            ("User-Agent", USER_AGENT),
        ]
        return SipMessage(headers=headers, method=method, uri=self.remote_target)

    def _connect_media(self, ok: SipMessage) -> None:
        """Start relaying the answered call's audio to its agent, if its dial has a stream.
        An answer whose SDP offers no audio we can relay is hung up (carrier_error)."""
        if self.media is None:
            return
        answer = parse_answer(ok.body)
        if answer is None:
            log.warning("SIP call %s: the answer's SDP has no PCMU or PCMA audio", self.call_id)
            self.inbox.put_nowait(Signal.HANGUP)
            self.media_refused = True
            return
        self.media.connect(answer)

    async def _talk(self) -> EndReason:
        """Wait until either side hangs up (the callee, us, or the agent); our BYE is sent and
        its answer awaited (or its Timer F), but the call is over from the moment either side
        hung up. Answers how the answered call ended."""
        ends = (Signal.BYE, Signal.HANGUP, Signal.AGENT_CLOSED, Signal.AGENT_UNAVAILABLE)
        while True:
            item = await self.inbox.get()
            if item in ends:
                break
        self.hung_up_at = _now()
        self.ended = True
        if self.media is not None:
            self.media.close()  # the agent hears `stop` now, not after the BYE's answer
        if self.media_refused:
            end_reason: EndReason = "carrier_error"
        elif item is Signal.AGENT_UNAVAILABLE:
            end_reason = "agent_unavailable"
        else:
            end_reason = "answered"
        if item is Signal.BYE:
            return end_reason
        self.cseq += 1
        answers: Inbox = asyncio.Queue()
        self.ua.start(self._in_dialog("BYE", self.cseq), answers)
        while True:
            answer = await answers.get()
            if answer in (Signal.TIMEOUT, Signal.UNREACHABLE) or (
                isinstance(answer, SipMessage) and answer.status >= 200
            ):
                return end_reason

    async def _end(self, end_reason: EndReason) -> None:
        ended_at = self.hung_up_at or _now()
        self.ended = True
        talk = round((ended_at - self.answered_at).total_seconds()) if self.answered_at else 0
        end = CallEvent(self.request.attempt_id, "ended", ended_at, end_reason, talk)
        self._abandon_invite()
        self.ua.call_ended(self, end)
        # It ended before anything came back (a failure of ours): `place` answers as usual,
        # and the end follows as an event.
        self._took()
        await self._report(end)

    async def _report(self, event: CallEvent) -> None:
        await self.placed.wait()
        await self.ua.events(event)

    def _abandon_invite(self) -> None:
        """Stop an INVITE left without a final response (Timer B, a transport error, or
        CANCELed and never answered)."""
        if self.invite is not None and self.invite.final is None:
            self.invite.stop()
            asyncio.get_running_loop().call_later(
                sip_transaction.LINGER, self.ua.forget, self.invite.key
            )
