"""The `sip` provider: a SIP user agent client that places calls through one trunk over UDP.

It speaks the part of RFC 3261 a dialer needs: an INVITE with an SDP offer, provisional
responses, CANCEL when the ring timeout passes or the dialer hangs up first (then ACK the 487),
ACK for every final response, BYE either way, digest authentication on 401/407, and the UDP
retransmission timers (A/B for the INVITE, E/F for BYE and CANCEL). Every request goes to the
trunk, which acts as the outbound proxy. The attempt id travels in `X-Outdial-Attempt` and
starts the Call-ID, so the trunk's records name the attempt.

Media is out of scope: the SDP offers G.711 and telephone-events on a port nothing serves, so
a call is signalling only until a media bridge exists."""

import asyncio
import logging
import secrets
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from pydantic import SecretStr

from outdial.telephony.base import (
    AttemptState,
    CallEvent,
    DialRequest,
    EndReason,
    EventSink,
    TelephonyProvider,
)
from outdial.telephony.sip_message import (
    SipMessage,
    SipParseError,
    UnsupportedChallenge,
    digest_credentials,
    param,
    parse,
    parse_challenge,
    response_to,
    uri_of,
)

log = logging.getLogger(__name__)

T1 = 0.5
"""RFC 3261 round-trip estimate; Timers A and E start here and double."""
T2 = 4.0
"""The cap on a non-INVITE request's retransmission interval."""
TRANSACTION_TIMEOUT = 64 * T1
"""Timers B and F: a request nobody answered in this long has failed."""
LINGER = 64 * T1
"""How long a finished transaction or call stays to absorb retransmissions (Timers D, K, M)."""
CLOSE_GRACE = 5.0
"""How long `aclose` lets hang-ups complete before it gives up on them."""
ENDED_REMEMBERED = 100_000
MEDIA_PORT = 9
"""The port the SDP offer names; nothing listens there (media is out of scope)."""
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


def outcome_of(status: int, *, canceled: bool) -> EndReason:
    """The end reason a final non-2xx response means (487 only answers our own CANCEL)."""
    if status == 487 and canceled:
        return "no_answer"
    return OUTCOMES.get(status, "carrier_error")


@dataclass(frozen=True, slots=True)
class Trunk:
    """Where every request goes: `sip:host[:port]` (UDP; port 5060 by default)."""

    host: str
    port: int = 5060

    @classmethod
    def parse(cls, uri: str) -> "Trunk":
        """Read `OUTDIAL_SIP_TRUNK`; raises ValueError on anything but a UDP sip: URI."""
        rest = uri.strip()
        if not rest.lower().startswith("sip:"):
            raise ValueError(
                f"OUTDIAL_SIP_TRUNK must be a sip: URI like sip:host:5060, not {uri!r}"
            )
        rest, *params = rest[4:].split(";")
        transport = next(
            (p.split("=", 1)[1] for p in params if p.lower().startswith("transport=")), "udp"
        )
        if transport.lower() != "udp":
            raise ValueError(f"OUTDIAL_SIP_TRUNK: only UDP is supported, not transport={transport}")
        hostport = rest.rsplit("@", 1)[-1]
        if hostport.startswith("["):
            host, _, after = hostport[1:].partition("]")
            port_text = after.removeprefix(":")
        else:
            host, _, port_text = hostport.partition(":")
        if not host:
            raise ValueError(f"OUTDIAL_SIP_TRUNK has no host: {uri!r}")
        try:
            port = int(port_text) if port_text else 5060
        except ValueError:
            raise ValueError(f"OUTDIAL_SIP_TRUNK has a bad port: {uri!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"OUTDIAL_SIP_TRUNK has a bad port: {uri!r}")
        return cls(host, port)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _now() -> datetime:
    return datetime.now(UTC)


class Signal(Enum):
    """What a call's task hears besides responses to its INVITE."""

    HANGUP = "hangup"
    """We hang up (the dialer asked, or the ring timeout passed)."""
    BYE = "bye"
    """The far end hung up."""
    TIMEOUT = "timeout"
    """The INVITE went unanswered for 64*T1 (Timer B)."""


Inbox = asyncio.Queue[SipMessage | Signal]


class ClientTransaction:
    """An RFC 3261 §17.1 client transaction over UDP. It retransmits its request (INVITE:
    Timer A until any response; others: Timer E, capped at T2, until a final one), reports
    Signal.TIMEOUT after 64*T1 without the response it needs (Timers B and F), ACKs an
    INVITE's non-2xx finals itself and absorbs retransmitted finals until it is forgotten."""

    def __init__(self, ua: "SipProvider", request: SipMessage, inbox: Inbox) -> None:
        self.ua = ua
        self.request = request
        self.inbox = inbox
        self.is_invite = request.method == "INVITE"
        self.proceeding = False
        self.final: SipMessage | None = None
        self.ack: SipMessage | None = None
        """The ACK sent for the final response, sent again for each retransmission of it."""
        self._timers: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.request.branch or "", self.request.cseq[1])

    def start(self) -> None:
        """Send the request and start the retransmission timers."""
        self.ua.send(self.request)
        self._timers = asyncio.create_task(self._retransmit())

    async def _retransmit(self) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + TRANSACTION_TIMEOUT
        interval = T1
        while True:
            await asyncio.sleep(min(interval, max(0.0, give_up_at - loop.time())))
            if loop.time() >= give_up_at:
                self._finish()
                self.inbox.put_nowait(Signal.TIMEOUT)
                return
            self.ua.send(self.request)
            interval = interval * 2 if self.is_invite else min(interval * 2, T2)
            if self.proceeding:
                interval = T2

    def receive(self, response: SipMessage) -> None:
        """Handle a response matched to this transaction."""
        if self.final is not None:
            if self.ack is not None:
                self.ua.send(self.ack)  # our ACK was lost: the final came again
            return
        if response.status < 200:
            self.proceeding = True
            if self.is_invite and self._timers is not None:
                self._timers.cancel()  # Proceeding: the far end has the INVITE
            self.inbox.put_nowait(response)
            return
        self.final = response
        self._finish()
        if self.is_invite and response.status >= 300:
            self.ack = self._ack_for(response)
            self.ua.send(self.ack)
        self.inbox.put_nowait(response)

    def _ack_for(self, response: SipMessage) -> SipMessage:
        """RFC 3261 §17.1.1.3: the same Request-URI, top Via, From, Call-ID and Route as the
        INVITE; the To of the response; CSeq of the INVITE with method ACK."""
        request = self.request
        headers = [
            ("Via", request.values("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", request.header("From") or ""),
            ("To", response.header("To") or ""),
            ("Call-ID", request.call_id),
            ("CSeq", f"{request.cseq[0]} ACK"),
            *(("Route", route) for route in request.values("Route")),
        ]
        return SipMessage(headers=headers, method="ACK", uri=request.uri)

    def _finish(self) -> None:
        if self._timers is not None and self._timers is not asyncio.current_task():
            self._timers.cancel()
        asyncio.get_running_loop().call_later(LINGER, self.ua.forget, self.key)

    def stop(self) -> None:
        """Stop retransmitting (shutdown)."""
        if self._timers is not None:
            self._timers.cancel()


@dataclass(eq=False)
class Call:
    """One attempt's INVITE dialog, from the UAC side."""

    request: DialRequest
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

    @property
    def from_header(self) -> str:
        return f"<{self.local_uri}>;tag={self.local_tag}"


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, ua: "SipProvider") -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            message = parse(data)
        except SipParseError as exc:
            log.debug("ignoring a datagram from %s: %s", addr, exc)
            return
        self.ua.dispatch(message, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) are not fatal: the timers decide a request's fate.
        log.debug("SIP socket error: %s", exc)


class SipProvider(TelephonyProvider):
    """Places calls through one SIP trunk; see the module docstring for what it speaks."""

    name = "sip"

    def __init__(
        self,
        events: EventSink,
        *,
        trunk: Trunk,
        username: str | None = None,
        password: SecretStr | None = None,
        bind_host: str | None = None,
        bind_port: int = 0,
    ) -> None:
        super().__init__(events)
        self.trunk = trunk
        self.username = username
        self._password = password
        self.bind_host = bind_host
        self.bind_port = bind_port
        self._transport: asyncio.DatagramTransport | None = None
        self._trunk_addr: tuple[str, int] | None = None
        self._local: tuple[str, int] = ("", 0)
        self._opening = asyncio.Lock()
        self._calls: dict[str, Call] = {}
        self._live: dict[str, Call] = {}
        self._transactions: dict[tuple[str, str], ClientTransaction] = {}
        self._ended: OrderedDict[str, CallEvent] = OrderedDict()
        self._unsent: OrderedDict[str, None] = OrderedDict()

    @property
    def local_address(self) -> tuple[str, int]:
        """The address our Via and Contact name (known once the first call is placed)."""
        return self._local

    # --- the socket ------------------------------------------------------------------------

    async def _open(self) -> None:
        async with self._opening:
            if self._transport is not None:
                return
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(self.trunk.host, self.trunk.port, type=socket.SOCK_DGRAM)
            family, _, _, _, trunk_addr = infos[0]
            self._trunk_addr = (str(trunk_addr[0]), int(trunk_addr[1]))
            host = self.bind_host or _interface_towards(family, self._trunk_addr)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(host, self.bind_port), family=family
            )
            self._transport = transport
            self._local = (host, int(transport.get_extra_info("sockname")[1]))
            log.info(
                "SIP UA on %s, trunk %s", _hostport(*self._local), _hostport(*self._trunk_addr)
            )

    def send(self, message: SipMessage, addr: tuple[str, int] | None = None) -> None:
        """Send a message to the trunk (or to `addr`, for responses)."""
        if self._transport is None or self._trunk_addr is None:
            return
        self._transport.sendto(message.encode(), addr or self._trunk_addr)

    def forget(self, key: tuple[str, str]) -> None:
        """Drop a finished transaction once its retransmissions can no longer arrive."""
        self._transactions.pop(key, None)

    def _start(self, request: SipMessage, inbox: Inbox) -> ClientTransaction:
        transaction = ClientTransaction(self, request, inbox)
        self._transactions[transaction.key] = transaction
        transaction.start()
        return transaction

    # --- incoming messages -----------------------------------------------------------------

    def dispatch(self, message: SipMessage, addr: tuple[str, int]) -> None:
        """Route a received message: responses to their transaction, requests to their call."""
        try:
            if message.is_request:
                self._on_request(message, addr)
                return
            key = (message.branch or "", message.cseq[1])
        except SipParseError as exc:
            log.debug("ignoring a message from %s: %s", addr, exc)
            return
        transaction = self._transactions.get(key)
        if transaction is not None:
            transaction.receive(message)

    def _on_request(self, request: SipMessage, addr: tuple[str, int]) -> None:
        if request.method == "ACK":
            return  # we never send a 2xx to an INVITE, so no ACK concerns us
        call = self._calls.get(request.call_id)
        in_dialog = call is not None and call.remote_to is not None
        if request.method == "BYE" and call is not None and in_dialog:
            self.send(_reply(request, 200, "OK", call.local_tag), addr)
            if not call.ended:
                call.inbox.put_nowait(Signal.BYE)
        elif request.method == "OPTIONS":
            self.send(_reply(request, 200, "OK", call.local_tag if call else None), addr)
        elif call is None or not in_dialog:
            self.send(_reply(request, 481, "Call/Transaction Does Not Exist"), addr)
        else:
            # re-INVITE, UPDATE, INFO...: refusing leaves the session as it was (RFC 3261 §14.1)
            self.send(_reply(request, 501, "Not Implemented", call.local_tag), addr)

    # --- the provider interface ------------------------------------------------------------

    async def place(self, request: DialRequest) -> str:
        """Send the INVITE and return its Call-ID; the call then runs in a task of its own."""
        try:
            await self._open()
        except OSError:
            self._remember_unsent(request.attempt_id)
            raise
        call = Call(
            request=request,
            call_id=f"{request.attempt_id}.{secrets.token_hex(4)}",
            local_tag=secrets.token_hex(6),
            local_uri=f"sip:{request.from_number}@{_hostport(self.trunk.host, self.trunk.port)}",
            remote_uri=f"sip:{request.to}@{_hostport(self.trunk.host, self.trunk.port)}",
        )
        self._calls[call.call_id] = call
        self._live[request.attempt_id] = call
        call.invite = self._start(self._invite(call), call.inbox)
        call.task = asyncio.create_task(self._run(call))
        return call.call_id

    async def hangup(self, attempt_id: str, *, provider_call_id: str | None = None) -> None:
        """Hang up a live call: CANCEL while it rings, BYE once answered. Its `ended` event
        follows as usual; unknown or ended attempts are ignored."""
        call = self._live.get(attempt_id)
        if call is not None:
            call.inbox.put_nowait(Signal.HANGUP)

    async def lookup(self, attempt_id: str, *, provider_call_id: str | None = None) -> AttemptState:
        """What this process knows: live or ended calls it placed; an attempt whose INVITE it
        could not send (no socket) was never received. Anything else is unknown: another
        process may have sent its INVITE before it died. (Calls are known by attempt id, so
        `provider_call_id`, our own Call-ID, adds nothing.)"""
        if (call := self._live.get(attempt_id)) is not None:
            return AttemptState("live", answered_at=call.answered_at)
        if (end := self._ended.get(attempt_id)) is not None:
            return AttemptState("ended", end=end)
        if attempt_id in self._unsent:
            return AttemptState("never_received")
        return AttemptState("unknown")

    async def aclose(self) -> None:
        """Hang up every live call, wait a little for the hang-ups, close the socket."""
        calls = list(self._live.values())
        for call in calls:
            call.inbox.put_nowait(Signal.HANGUP)
        tasks = [c.task for c in calls if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for transaction in self._transactions.values():
            transaction.stop()
        self._transactions.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- one call --------------------------------------------------------------------------

    async def _run(self, call: Call) -> None:
        end_reason: EndReason = "carrier_error"
        try:
            final = await self._ring(call)
            if final is not None and final.status < 300:
                answered_at = self._confirm(call, final)
                end_reason = "answered"
                await self.events(CallEvent(call.request.attempt_id, "answered", answered_at))
                await self._talk(call)
            elif final is not None:
                end_reason = outcome_of(final.status, canceled=call.cancel_sent)
            elif call.cancel_sent:
                end_reason = "no_answer"  # CANCELed, and no final response ever came
        except Exception:
            log.exception("SIP call %s failed", call.call_id)
        finally:
            await self._end(call, end_reason)

    async def _ring(self, call: Call) -> SipMessage | None:
        """Wait for the INVITE's final response. The ring timeout or a hang-up sends CANCEL
        (once the far end has sent a provisional response, RFC 3261 §9.1); a digest challenge
        is answered once. None when the trunk never answered (Timer B) or the CANCELed INVITE
        got no final response within 64*T1."""
        loop = asyncio.get_running_loop()
        deadline: float | None = loop.time() + call.request.ring_timeout_seconds
        challenges_answered: set[int] = set()
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(call.inbox.get(), timeout)
            except TimeoutError:
                if call.cancel_sent:
                    return None
                item = Signal.HANGUP  # rang past the ring timeout
            if item is Signal.TIMEOUT:
                return None
            if item is Signal.HANGUP:
                call.cancel_wanted = True
                deadline = self._cancel_if_ringing(call)
                continue
            if not isinstance(item, SipMessage):
                continue  # a BYE before the dialog exists is answered 481 and ignored
            if item.status < 200:
                deadline = self._cancel_if_ringing(call) if call.cancel_wanted else deadline
                continue
            if item.status in (401, 407) and not call.cancel_wanted:
                if item.status not in challenges_answered and self._authenticate(call, item):
                    challenges_answered.add(item.status)
                    continue
            return item

    def _cancel_if_ringing(self, call: Call) -> float | None:
        """Send CANCEL if it may be sent now; answers the new deadline for the INVITE's final
        response (None: wait for the provisional response, or for Timer B)."""
        if call.cancel_sent:
            return asyncio.get_running_loop().time() + TRANSACTION_TIMEOUT
        if call.invite is None or not call.invite.proceeding:
            return None
        invite = call.invite.request
        headers = [
            ("Via", invite.values("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", invite.header("To") or ""),
            ("Call-ID", call.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
            *(("Route", route) for route in invite.values("Route")),
            ("User-Agent", USER_AGENT),
        ]
        self._start(SipMessage(headers=headers, method="CANCEL", uri=invite.uri), asyncio.Queue())
        call.cancel_sent = True
        return asyncio.get_running_loop().time() + TRANSACTION_TIMEOUT

    def _authenticate(self, call: Call, challenge_response: SipMessage) -> bool:
        """Send the INVITE again with credentials for this challenge: same Call-ID and tag,
        CSeq + 1, a new branch. False when we cannot (no credentials, unknown scheme)."""
        if self.username is None or self._password is None or call.invite is None:
            log.warning("SIP trunk asked %s for credentials; none are configured", call.call_id)
            return False
        is_proxy = challenge_response.status == 407
        header = challenge_response.header("Proxy-Authenticate" if is_proxy else "WWW-Authenticate")
        try:
            challenge = parse_challenge(header or "")
        except UnsupportedChallenge as exc:
            log.warning("SIP trunk challenge for %s cannot be answered: %s", call.call_id, exc)
            return False
        previous = call.invite.request
        call.cseq += 1
        credentials = digest_credentials(
            challenge,
            method="INVITE",
            uri=previous.uri or "",
            username=self.username,
            password=self._password.get_secret_value(),
            cnonce=secrets.token_hex(8),
        )
        header_name = "Proxy-Authorization" if is_proxy else "Authorization"
        # Credentials for the other challenge (a proxy's, then the trunk's) still hold.
        kept = [
            (name, value)
            for name, value in previous.headers
            if name in ("Authorization", "Proxy-Authorization") and name != header_name
        ]
        invite = self._invite(call)
        invite.headers[-1:-1] = [*kept, (header_name, credentials)]
        call.invite = self._start(invite, call.inbox)
        return True

    def _invite(self, call: Call) -> SipMessage:
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", call.from_header),
            ("To", f"<{call.remote_uri}>"),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.cseq} INVITE"),
            ("Contact", f"<sip:{call.request.from_number}@{_hostport(*self._local)}>"),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
            ("User-Agent", USER_AGENT),
            (ATTEMPT_HEADER, call.request.attempt_id),
            ("Content-Type", "application/sdp"),
        ]
        return SipMessage(
            headers=headers, body=_sdp_offer(self._local[0]), method="INVITE", uri=call.remote_uri
        )

    def _via(self) -> str:
        return f"SIP/2.0/UDP {_hostport(*self._local)};branch=z9hG4bK{secrets.token_hex(8)};rport"

    def _confirm(self, call: Call, ok: SipMessage) -> datetime:
        """The dialog from a 2xx: the far end's tag and target, the route set; then ACK it
        (a new transaction, RFC 3261 §13.2.2.4), again for each retransmitted 2xx. Answers
        when the call was answered."""
        answered_at = call.answered_at = _now()
        call.remote_to = ok.header("To") or ""
        contact = ok.header("Contact")
        call.remote_target = uri_of(contact) if contact else call.remote_uri
        call.route_set = list(reversed(ok.values("Record-Route")))
        ack = self._in_dialog(call, "ACK", call.invite.request.cseq[0] if call.invite else 1)
        if call.invite is not None:
            call.invite.ack = ack
        self.send(ack)
        if call.cancel_wanted:
            call.inbox.put_nowait(Signal.HANGUP)  # answered as our CANCEL crossed: hang up
        return answered_at

    def _in_dialog(self, call: Call, method: str, cseq: int) -> SipMessage:
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", call.from_header),
            ("To", call.remote_to or ""),
            ("Call-ID", call.call_id),
            ("CSeq", f"{cseq} {method}"),
            *(("Route", route) for route in call.route_set),
            ("User-Agent", USER_AGENT),
        ]
        return SipMessage(headers=headers, method=method, uri=call.remote_target)

    async def _talk(self, call: Call) -> None:
        """Wait until either side hangs up; our BYE is sent and its answer awaited (or its
        Timer F), but the call is over from the moment either side hung up."""
        while True:
            item = await call.inbox.get()
            if item in (Signal.BYE, Signal.HANGUP):
                break
        call.hung_up_at = _now()
        call.ended = True
        if item is Signal.BYE:
            return
        call.cseq += 1
        answers: Inbox = asyncio.Queue()
        self._start(self._in_dialog(call, "BYE", call.cseq), answers)
        while True:
            answer = await answers.get()
            if answer is Signal.TIMEOUT or (
                isinstance(answer, SipMessage) and answer.status >= 200
            ):
                break

    async def _end(self, call: Call, end_reason: EndReason) -> None:
        ended_at = call.hung_up_at or _now()
        call.ended = True
        talk = round((ended_at - call.answered_at).total_seconds()) if call.answered_at else 0
        end = CallEvent(call.request.attempt_id, "ended", ended_at, end_reason, talk)
        self._live.pop(call.request.attempt_id, None)
        self._remember(end)
        loop = asyncio.get_running_loop()
        loop.call_later(LINGER, self._calls.pop, call.call_id, None)
        if call.invite is not None and call.invite.final is None:
            # Abandoned without a final response (Timer B, or CANCELed and never answered).
            call.invite.stop()
            loop.call_later(LINGER, self.forget, call.invite.key)
        await self.events(end)

    def _remember(self, end: CallEvent) -> None:
        self._ended[end.attempt_id] = end
        while len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

    def _remember_unsent(self, attempt_id: str) -> None:
        self._unsent[attempt_id] = None
        while len(self._unsent) > ENDED_REMEMBERED:
            self._unsent.popitem(last=False)


def _reply(request: SipMessage, status: int, reason: str, to_tag: str | None = None) -> SipMessage:
    response = response_to(request, status, reason)
    if to_tag is not None and param(request.header("To") or "", "tag") is None:
        response.headers = [
            (n, f"{v};tag={to_tag}" if n.lower() in ("to", "t") else v) for n, v in response.headers
        ]
    return response


def _interface_towards(family: int, addr: tuple[str, int]) -> str:
    """The local address the kernel would use to reach `addr` (connecting a UDP socket sends
    nothing)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(addr)
        return str(probe.getsockname()[0])


def _sdp_offer(host: str) -> bytes:
    session = secrets.randbelow(2**31)
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=outdial {session} {session} IN {ip} {host}",
        "s=outdial",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {MEDIA_PORT} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
