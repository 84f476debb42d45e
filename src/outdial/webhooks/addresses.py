"""Where webhooks may be sent: http(s) URLs whose host resolves only to public addresses (no
loopback, private, link-local, unspecified, multicast or reserved one, IPv4 or IPv6,
IPv4-mapped and 6to4/NAT64-embedded included), unless private URLs are allowed.

Checked when an endpoint is created or changed, and again when a delivery connects, on the
addresses it then connects to: the host is resolved once, every address checked, and the
connection made to a checked address, so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot lead a delivery elsewhere."""

import asyncio
import errno
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from outdial.errors import ValidationFailed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

RESOLVE_TIMEOUT_SECONDS = 5.0
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refused(address: Address) -> bool:
    """Whether `address` is one webhooks must not reach (anything but a global unicast
    address, looking through IPv6 forms that embed an IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refused(embedded)
    return (
        not address.is_global
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_unspecified
        or address.is_reserved
    )


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def first_refused(addresses: Iterable[str]) -> str | None:
    for text in addresses:
        if refused(ipaddress.ip_address(text.split("%", 1)[0])):  # drop an IPv6 zone id
            return text
    return None


async def check_url(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> None:
    """Refuse (400) a URL webhooks may not be sent to, naming why."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise _invalid(url, "its port is not a number from 0 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(url, "it must be an http:// or https:// URL with a host")
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses = await resolver(host, port or (443 if parts.scheme == "https" else 80))
    except (OSError, UnicodeError, TimeoutError) as exc:
        raise _invalid(url, f"its host {host} does not resolve ({exc})") from None
    bad = first_refused(addresses)
    if bad is not None or not addresses:
        raise ValidationFailed(
            f"The webhook URL's host {host} resolves to {bad}, a loopback, private, "
            "link-local or otherwise non-public address (allowed only with "
            "OUTDIAL_WEBHOOK_ALLOW_PRIVATE_URLS=true).",
            code="url_not_allowed",
            details=[{"loc": ["url"], "message": f"resolves to {bad}", "type": "url_not_allowed"}],
        )


def _invalid(url: str, why: str) -> ValidationFailed:
    return ValidationFailed(
        f"The webhook URL {url!r} is not usable: {why}.",
        code="invalid_url",
        details=[{"loc": ["url"], "message": why, "type": "invalid_url"}],
    )


class RefusedAddress(OSError):
    """A delivery's host is, or resolves to, an address webhooks may not reach."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)  # aiohttp reports an OSError's strerror


def _unresolvable(message: str) -> OSError:
    return OSError(errno.EHOSTUNREACH, message)


def refused_literal(host: str) -> None:
    """Refuse a host given as an IP literal that is not public (resolvers are not asked
    about those)."""
    if _refused_literal(host):
        raise RefusedAddress(f"{host}: not a public address, refused")


@functools.lru_cache(maxsize=4096)
def _refused_literal(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: the resolver checks what it resolves to
    return refused(address)


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver for deliveries: resolves a host once, refuses it if any address
    is not public, and hands aiohttp the checked addresses, which it connects to (and
    caches for its DNS cache's lifetime); it never resolves the name again itself."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve) -> None:
        self._allow_private = allow_private
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        try:
            addresses = await self._resolver(host, port)
        except (OSError, UnicodeError, TimeoutError) as exc:
            raise _unresolvable(f"{host} does not resolve: {exc}") from exc
        bad = None if self._allow_private else first_refused(addresses)
        if bad is not None:
            raise RefusedAddress(f"{host} resolves to {bad}: not a public address, refused")
        if not addresses:
            raise _unresolvable(f"{host} resolves to no address")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses  # in the order the resolver gave (RFC 6724)
        ]

    async def close(self) -> None:
        return None
