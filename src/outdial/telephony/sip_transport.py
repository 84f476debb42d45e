"""The `sip` provider's transport: the trunk it is configured with, and its one UDP socket
towards it (RFC 3261 §18), which reads datagrams into SIP messages, sends them, and tells
which destination a transport error (ICMP, a failed send) concerns."""

import asyncio
import errno
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

from outdial.telephony.sip_message import SipMessage, SipParseError, parse

log = logging.getLogger(__name__)

Address = tuple[str, int]
MessageHandler = Callable[[SipMessage, Address], None]
UnreachableHandler = Callable[[Address, OSError], None]

# Linux reports ICMP errors on an unconnected UDP socket only with IP_RECVERR (IPV6_RECVERR)
# set, and then queues each with the destination of the datagram it refused; other systems
# report them on connected sockets only, so there Timer B decides. (<linux/in.h>, in6.h,
# errqueue.h: the values are fixed in Linux's ABI; Python names IP_RECVERR only from 3.12.)
_RECVERR: dict[int, tuple[int, int]] = (
    {socket.AF_INET: (socket.IPPROTO_IP, 11), socket.AF_INET6: (socket.IPPROTO_IPV6, 25)}
    if sys.platform == "linux"
    else {}
)
_EXTENDED_ERR = struct.Struct("=IBBBBII")
"""struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data."""
_HARD_ICMP = {2: {3, 12}, 3: {1, 4}}
"""By ee_origin (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6), the ICMP types that fail a request:
destination unreachable and parameter problem (ICMP 3 and 12; ICMPv6 1 and 4)."""


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


def hostport(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: "SipSocket") -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            message = parse(data)
        except SipParseError as exc:
            log.debug("ignoring a datagram from %s: %s", addr, exc)
            return
        self.owner.on_message(message, addr)

    def error_received(self, exc: Exception) -> None:
        self.owner.error_received(exc)


class SipSocket:
    """The user agent's UDP socket: bound (on first use) on the interface that reaches the
    trunk, unless a bind address is configured; every message it reads goes to
    `on_message`, and every transport error it can pin on a destination (an ICMP error, a
    failed send) goes to `on_unreachable` with that destination, so that the requests the
    destination never answered fail at once (RFC 3261 §18.4) instead of after Timer B."""

    def __init__(
        self,
        trunk: Trunk,
        *,
        on_message: MessageHandler,
        on_unreachable: UnreachableHandler,
        bind_host: str | None = None,
        bind_port: int = 0,
    ) -> None:
        self.trunk = trunk
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.bind_host = bind_host
        self.bind_port = bind_port
        self.local: Address = ("", 0)
        """The address our Via and Contact name (known once open)."""
        self.trunk_address: Address | None = None
        """The trunk's address as resolved when the socket was opened."""
        self._sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sending_to: Address | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Resolve the trunk and bind the socket, unless it is open already. Raises OSError
        when the trunk's name does not resolve or the socket cannot be bound."""
        async with self._opening:
            if self._transport is not None:
                return
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(self.trunk.host, self.trunk.port, type=socket.SOCK_DGRAM)
            family, _, _, _, trunk_addr = infos[0]
            self.trunk_address = (str(trunk_addr[0]), int(trunk_addr[1]))
            host = self.bind_host or _interface_towards(family, self.trunk_address)
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                _report_icmp_errors(sock)
                sock.bind((host, self.bind_port))
                sock.setblocking(False)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), sock=sock
                )
            except BaseException:
                sock.close()
                raise
            self._sock, self._transport = sock, transport
            self.local = (host, int(sock.getsockname()[1]))
            log.info("SIP UA on %s, trunk %s", hostport(*self.local), hostport(*self.trunk_address))

    def send(self, message: SipMessage, addr: Address | None = None) -> None:
        """Send a message to the trunk (or to `addr`, for responses). A send that fails on
        its own account (no route, a firewall's refusal) is reported to `on_unreachable`
        before this returns."""
        if self._transport is None or self.trunk_address is None:
            return
        # The transport reports a failed send to error_received from within sendto; this
        # says where that send was going.
        self._sending_to = addr or self.trunk_address
        try:
            self._transport.sendto(message.encode(), self._sending_to)
        finally:
            self._sending_to = None

    def error_received(self, exc: Exception) -> None:
        """ICMP errors queued on the socket (each names the destination of the datagram it
        refused), or a failed send (its destination is known)."""
        refusals = self._icmp_errors()
        for addr, error in refusals:
            self.on_unreachable(addr, error)
        if refusals:
            # A send that fails now failed on the pending error of an earlier datagram (the
            # kernel reports it on the next send), reported above: this one is lost like
            # any datagram, and its transaction's timers send it again.
            return
        if self._sending_to is not None and isinstance(exc, OSError):
            self.on_unreachable(self._sending_to, exc)
        else:
            log.debug("SIP socket error: %s", exc)

    def close(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            self._sock = None

    def _icmp_errors(self) -> list[tuple[Address, OSError]]:
        """Drain the socket's error queue (Linux, IP_RECVERR): the destinations that answered
        with an ICMP error meaning "nothing there" (destination unreachable: port, host,
        network, protocol, administratively prohibited; parameter problem). Fragmentation
        needed, time exceeded and source quench are not failures (RFC 3261 §18.4)."""
        if self._sock is None or not _RECVERR:
            return []
        refused: list[tuple[Address, OSError]] = []
        while True:
            try:
                _, ancillary, _, addr = self._sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return refused
            except OSError as exc:
                log.debug("reading the SIP socket's error queue failed: %s", exc)
                return refused
            for level, kind, data in ancillary:
                if (level, kind) not in _RECVERR.values() or len(data) < _EXTENDED_ERR.size:
                    continue
                errno_, origin, icmp_type, _, _, _, _ = _EXTENDED_ERR.unpack_from(data)
                hard = icmp_type in _HARD_ICMP.get(origin, ()) and errno_ != errno.EMSGSIZE
                if hard and addr:
                    error = OSError(errno_, os.strerror(errno_))
                    refused.append(((str(addr[0]), int(addr[1])), error))


def _report_icmp_errors(sock: socket.socket) -> None:
    """Ask the kernel to queue ICMP errors on this unconnected socket (Linux). Where it
    cannot, Timer B decides, as elsewhere."""
    if sock.family in _RECVERR:
        level, option = _RECVERR[sock.family]
        try:
            sock.setsockopt(level, option, 1)
        except OSError as exc:
            log.warning("ICMP errors will not be read on the SIP socket: %s", exc)


def _interface_towards(family: int, addr: Address) -> str:
    """The local address the kernel would use to reach `addr` (connecting a UDP socket sends
    nothing)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(addr)
        return str(probe.getsockname()[0])
