"""The `sip` provider: a SIP user agent client that places calls through one trunk over UDP.

It speaks the part of RFC 3261 a dialer needs: an INVITE with an SDP offer, provisional
responses, CANCEL when the ring timeout passes or the dialer hangs up first (then ACK the 487),
ACK for every final response, BYE either way, digest authentication on 401/407, and the UDP
retransmission timers (A/B for the INVITE, E/F for BYE and CANCEL). Every request goes to the
trunk, which acts as the outbound proxy. The attempt id travels in `X-Outdial-Attempt` and
starts the Call-ID, so the trunk's records name the attempt.

A call whose dial carries a stream (its agent has a `stream_url`) relays its audio itself: the
SDP offer names a UDP port of the call's own and offers PCMU, PCMA and telephone-event; once
answered, `media.bridge.RtpBridge` carries the audio between that port and the agent's
WebSocket. The agent closing its socket hangs up (BYE); the callee's BYE stops the stream; an
agent that cannot be reached or sends no audio within 2 s of the answer is hung up on, and the
call ends `agent_unavailable`. A call without a stream is signalling only: its offer names a
port nothing serves (the discard port).

This module is the provider (its interface, the calls it knows, requests from the trunk); one
call's dialog and flow are in `sip_call`, client transactions and their timers in
`sip_transaction`, the socket and the trunk's address in `sip_transport`, the wire format and
digest credentials in `sip_message`."""

import asyncio
import logging
import secrets
from collections import OrderedDict

from pydantic import SecretStr

from outdial.telephony import sip_transaction
from outdial.telephony.base import (
    AttemptState,
    CallEvent,
    CarrierUnreachable,
    DialRequest,
    EventSink,
    TelephonyProvider,
)
from outdial.telephony.sip_call import Call, Credentials
from outdial.telephony.sip_message import SipMessage, SipParseError, param, response_to
from outdial.telephony.sip_transaction import ClientTransaction, Inbox, Signal
from outdial.telephony.sip_transport import Address, SipSocket, Trunk, hostport

log = logging.getLogger(__name__)

CLOSE_GRACE = 5.0
"""How long `aclose` lets hang-ups complete before it gives up on them."""
ENDED_REMEMBERED = 100_000


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
        self._trunk = hostport(trunk.host, trunk.port)
        self.credentials = (
            Credentials(username, password)
            if username is not None and password is not None
            else None
        )
        self._socket = SipSocket(
            trunk,
            on_message=self.dispatch,
            on_unreachable=self._transport_failed,
            bind_host=bind_host,
            bind_port=bind_port,
        )
        self._calls: dict[str, Call] = {}
        self._live: dict[str, Call] = {}
        self._transactions: dict[tuple[str, str], ClientTransaction] = {}
        self._ended: OrderedDict[str, CallEvent] = OrderedDict()
        self._not_taken: OrderedDict[str, None] = OrderedDict()

    @property
    def local_address(self) -> Address:
        """The address our Via and Contact name (known once the first call is placed)."""
        return self._socket.local

    # --- transactions ----------------------------------------------------------------------

    def send(self, message: SipMessage, addr: Address | None = None) -> None:
        """Send a message to the trunk (or to `addr`, for responses)."""
        self._socket.send(message, addr)

    def forget(self, key: tuple[str, str]) -> None:
        """Drop a finished transaction once its retransmissions can no longer arrive."""
        self._transactions.pop(key, None)

    def start(self, request: SipMessage, inbox: Inbox) -> ClientTransaction:
        """Start a client transaction for `request`; what it hears goes to `inbox`."""
        transaction = ClientTransaction(self, request, inbox)
        self._transactions[transaction.key] = transaction
        transaction.start()
        return transaction

    # --- incoming messages -----------------------------------------------------------------

    def dispatch(self, message: SipMessage, addr: Address) -> None:
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

    def _transport_failed(self, addr: Address, error: OSError) -> None:
        """An ICMP error or a failed send towards `addr`. From the trunk it means nothing
        listens there (or cannot be reached): every request it has not answered at all has
        failed (RFC 3261 §18.4), among them the INVITEs of calls it never took. Requests it
        answered go on; their own timers decide."""
        log.debug("SIP transport error towards %s: %s", hostport(*addr), error)
        if addr != self._socket.trunk_address:
            return
        for transaction in list(self._transactions.values()):
            transaction.fail(error)

    def _on_request(self, request: SipMessage, addr: Address) -> None:
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
        """Send the INVITE and return its Call-ID once the trunk has taken the call (it
        answered the INVITE); the call then runs in a task of its own. Raises
        CarrierUnreachable when the trunk never took it: its name does not resolve, the
        socket cannot be opened, an ICMP error or a failed send refused the INVITE, or
        nothing came back before Timer B (64*T1). Then no event follows, and `lookup`
        answers `never_received`."""
        try:
            await self._socket.open()
        except OSError as exc:
            self._remember_not_taken(request.attempt_id)
            raise CarrierUnreachable(f"the trunk {self._trunk} cannot be reached: {exc}") from exc
        call = Call(
            ua=self,
            request=request,
            trunk=self._trunk,
            call_id=f"{request.attempt_id}.{secrets.token_hex(4)}",
            local_tag=secrets.token_hex(6),
            local_uri=f"sip:{request.from_number}@{self._trunk}",
            remote_uri=f"sip:{request.to}@{self._trunk}",
        )
        try:
            await call.open_media()
        except OSError:
            self._remember_not_taken(request.attempt_id)
            raise
        self._calls[call.call_id] = call
        self._live[request.attempt_id] = call
        call.start()
        try:
            # Shielded: a caller that stops waiting leaves the call to run (and end) as usual.
            await asyncio.shield(call.taken)
        finally:
            # Its events go out once the caller has seen this return (and recorded it).
            asyncio.get_running_loop().call_soon(call.placed.set)
        return call.call_id

    async def hangup(self, attempt_id: str, *, provider_call_id: str | None = None) -> None:
        """Hang up a live call: CANCEL while it rings, BYE once answered. Its `ended` event
        follows as usual; unknown or ended attempts are ignored."""
        call = self._live.get(attempt_id)
        if call is not None:
            call.inbox.put_nowait(Signal.HANGUP)

    async def lookup(self, attempt_id: str, *, provider_call_id: str | None = None) -> AttemptState:
        """What this process knows: live or ended calls it placed; an attempt the trunk never
        took (see `place`) was never received. Anything else is unknown: another process may
        have sent its INVITE before it died. (Calls are known by attempt id, so
        `provider_call_id`, our own Call-ID, adds nothing.)"""
        if (call := self._live.get(attempt_id)) is not None:
            return AttemptState("live", answered_at=call.answered_at)
        if (end := self._ended.get(attempt_id)) is not None:
            return AttemptState("ended", end=end)
        if attempt_id in self._not_taken:
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
        self._socket.close()

    # --- bookkeeping -----------------------------------------------------------------------

    def call_ended(self, call: Call, end: CallEvent) -> None:
        """A call's end: no longer live, remembered for `lookup`; its Call-ID is kept a while
        to answer retransmitted requests."""
        self._live.pop(call.request.attempt_id, None)
        self._remember(end)
        asyncio.get_running_loop().call_later(
            sip_transaction.LINGER, self._calls.pop, call.call_id, None
        )

    def call_not_taken(self, call: Call) -> None:
        """A call the trunk never took: not live, never received (for `lookup`)."""
        self._live.pop(call.request.attempt_id, None)
        self._calls.pop(call.call_id, None)
        self._remember_not_taken(call.request.attempt_id)

    def _remember(self, end: CallEvent) -> None:
        self._ended[end.attempt_id] = end
        while len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

    def _remember_not_taken(self, attempt_id: str) -> None:
        self._not_taken[attempt_id] = None
        while len(self._not_taken) > ENDED_REMEMBERED:
            self._not_taken.popitem(last=False)


def _reply(request: SipMessage, status: int, reason: str, to_tag: str | None = None) -> SipMessage:
    response = response_to(request, status, reason)
    if to_tag is not None and param(request.header("To") or "", "tag") is None:
        response.headers = [
            (n, f"{v};tag={to_tag}" if n.lower() in ("to", "t") else v) for n, v in response.headers
        ]
    return response
