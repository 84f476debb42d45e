"""SIP client transactions over UDP (RFC 3261 §17.1): the retransmission timers, what a
call's task hears besides responses (`Signal`), and the queue it hears it on (`Inbox`)."""

import asyncio
from enum import Enum
from typing import Protocol

from outdial.telephony.sip_message import SipMessage

T1 = 0.5
"""RFC 3261 round-trip estimate; Timers A and E start here and double."""
T2 = 4.0
"""The cap on a non-INVITE request's retransmission interval."""
TRANSACTION_TIMEOUT = 64 * T1
"""Timers B and F: a request nobody answered in this long has failed."""
LINGER = 64 * T1
"""How long a finished transaction or call stays to absorb retransmissions (Timers D, K, M)."""


class Signal(Enum):
    """What a call's task hears besides responses to its INVITE."""

    HANGUP = "hangup"
    """We hang up (the dialer asked, or the ring timeout passed)."""
    BYE = "bye"
    """The far end hung up."""
    TIMEOUT = "timeout"
    """The request went unanswered for 64*T1 (Timers B and F)."""
    UNREACHABLE = "unreachable"
    """The request cannot reach the trunk (an ICMP error, a failed send): it has failed, as
    a timeout would have, without the wait (RFC 3261 §17.1.4)."""
    AGENT_CLOSED = "agent_closed"
    """The agent closed its stream: it hung up."""
    AGENT_UNAVAILABLE = "agent_unavailable"
    """The agent could not be reached, or sent no audio in time."""


Inbox = asyncio.Queue[SipMessage | Signal]


class Sender(Protocol):
    """What a transaction needs of its user agent: a way to send, and to be forgotten."""

    def send(self, message: SipMessage, addr: tuple[str, int] | None = None) -> None: ...

    def forget(self, key: tuple[str, str]) -> None: ...


class ClientTransaction:
    """An RFC 3261 §17.1 client transaction over UDP. It retransmits its request (INVITE:
    Timer A until any response; others: Timer E, capped at T2, until a final one), reports
    Signal.TIMEOUT after 64*T1 without the response it needs (Timers B and F), or
    Signal.UNREACHABLE as soon as the transport says the request cannot arrive (`fail`),
    ACKs an INVITE's non-2xx finals itself and absorbs retransmitted finals until it is
    forgotten."""

    def __init__(self, ua: Sender, request: SipMessage, inbox: Inbox) -> None:
        self.ua = ua
        self.request = request
        self.inbox = inbox
        self.is_invite = request.method == "INVITE"
        self.proceeding = False
        self.final: SipMessage | None = None
        self.ack: SipMessage | None = None
        """The ACK sent for the final response, sent again for each retransmission of it."""
        self.error: OSError | None = None
        """Why the transport failed the request, if it did (`fail`)."""
        self._timers: asyncio.Task[None] | None = None
        self._done = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.request.branch or "", self.request.cseq[1])

    @property
    def answered(self) -> bool:
        """Whether any response to the request has come."""
        return self.proceeding or self.final is not None

    def start(self) -> None:
        """Start the retransmission timers and send the request (a send that fails at once
        fails the transaction before this returns)."""
        self._timers = asyncio.create_task(self._retransmit())
        self.ua.send(self.request)

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

    def fail(self, error: OSError) -> None:
        """The transport says the request cannot reach its destination: stop, and report
        Signal.UNREACHABLE (once; a transaction already answered goes on)."""
        if self.answered or self._done:
            return
        self.error = error
        self._finish()
        self.inbox.put_nowait(Signal.UNREACHABLE)

    def receive(self, response: SipMessage) -> None:
        """Handle a response matched to this transaction (none counts once it has failed)."""
        if self.error is not None:
            return
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
        self._done = True
        if self._timers is not None and self._timers is not asyncio.current_task():
            self._timers.cancel()
        asyncio.get_running_loop().call_later(LINGER, self.ua.forget, self.key)

    def stop(self) -> None:
        """Stop retransmitting (shutdown)."""
        if self._timers is not None:
            self._timers.cancel()
