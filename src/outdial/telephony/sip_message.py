"""SIP messages on the wire (RFC 3261 §7) and digest credentials (RFC 3261 §22, RFC 7616):
only what the `sip` provider's user agent client reads and writes."""

import hashlib
import re
from dataclasses import dataclass, field
from urllib.request import parse_http_list, parse_keqv_list

COMPACT_NAMES = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
}
_STATUS_LINE = re.compile(r"SIP/2\.0\s+(\d{3})\s*(.*)")
_REQUEST_LINE = re.compile(r"([A-Za-z]+)\s+(\S+)\s+SIP/2\.0")
_PARAM = r";\s*{name}=([^;,>\s]+)"


class SipParseError(ValueError):
    """A datagram that is not a SIP message we can read."""


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    return COMPACT_NAMES.get(lowered, lowered)


@dataclass(slots=True)
class SipMessage:
    """A request (`method` and `uri` set) or a response (`status` set)."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    method: str | None = None
    uri: str | None = None
    status: int = 0
    reason: str = ""

    @property
    def is_request(self) -> bool:
        """True for requests, false for responses."""
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of a header (names are case-insensitive; compact forms count)."""
        values = self.values(name)
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        """Every value of a header, in order, with comma-separated lists split apart."""
        wanted = _canonical(name)
        found: list[str] = []
        for header_name, value in self.headers:
            if _canonical(header_name) == wanted:
                found.extend(_split_list(value) if wanted in _LIST_HEADERS else [value])
        return found

    @property
    def call_id(self) -> str:
        """The Call-ID header ("" if missing)."""
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """The CSeq number and method."""
        number, _, method = (self.header("CSeq") or "").partition(" ")
        try:
            return int(number), method.strip().upper()
        except ValueError as exc:
            raise SipParseError(f"bad CSeq: {self.header('CSeq')!r}") from exc

    @property
    def branch(self) -> str | None:
        """The branch parameter of the top Via."""
        via = self.header("Via")
        return param(via, "branch") if via else None

    def encode(self) -> bytes:
        """The message as sent: start line, headers, Content-Length, blank line, body."""
        if self.is_request:
            lines = [f"{self.method} {self.uri} SIP/2.0"]
        else:
            lines = [f"SIP/2.0 {self.status} {self.reason}"]
        lines += [
            f"{name}: {value}"
            for name, value in self.headers
            if _canonical(name) != "content-length"
        ]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


_LIST_HEADERS = {"via", "route", "record-route", "contact"}


def _split_list(value: str) -> list[str]:
    """Split a comma-separated header value, keeping commas inside quotes and <...> intact."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse(data: bytes) -> SipMessage:
    """Read one SIP message from a datagram; raises SipParseError on anything else."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)  # keep-alive CRLFs before a message
    if not lines:
        raise SipParseError("empty datagram")
    message = _start_line(lines[0])
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and message.headers:
            name, value = message.headers[-1]
            message.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"bad header line: {line!r}")
        message.headers.append((name.strip(), value.strip()))
    length = message.header("Content-Length")
    message.body = body[: int(length)] if length and length.isdigit() else body
    return message


def _start_line(line: str) -> SipMessage:
    if status := _STATUS_LINE.fullmatch(line.strip()):
        return SipMessage(status=int(status.group(1)), reason=status.group(2))
    if request := _REQUEST_LINE.fullmatch(line.strip()):
        return SipMessage(method=request.group(1).upper(), uri=request.group(2))
    raise SipParseError(f"not a SIP start line: {line!r}")


def param(value: str, name: str) -> str | None:
    """A `;name=value` parameter of a header value; for name-addr values (`<uri>;tag=x`) only
    the parameters after the closing `>` count, not the URI's own."""
    outside = value.rsplit(">", 1)[-1] if "<" in value else value
    found = re.search(_PARAM.format(name=re.escape(name)), outside, re.IGNORECASE)
    return found.group(1) if found else None


def uri_of(value: str) -> str:
    """The URI of a name-addr or addr-spec header value (Contact, Record-Route, To)."""
    if "<" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()


def response_to(request: SipMessage, status: int, reason: str) -> SipMessage:
    """A response that echoes the request's Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6)."""
    echoed = [
        (name, value)
        for name, value in request.headers
        if _canonical(name) in ("via", "from", "to", "call-id", "cseq")
    ]
    return SipMessage(headers=echoed, status=status, reason=reason)


# --- digest authentication --------------------------------------------------------------------

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge from WWW-Authenticate (401) or Proxy-Authenticate (407)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None


class UnsupportedChallenge(ValueError):
    """A challenge we cannot answer (not Digest, or an algorithm or qop we do not speak)."""


def parse_challenge(value: str) -> Challenge:
    """Read a `Digest realm=..., nonce=...` challenge."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise UnsupportedChallenge(f"not a Digest challenge: {scheme}")
    fields = {k.lower(): v for k, v in parse_keqv_list(parse_http_list(rest)).items()}
    if "nonce" not in fields:
        raise UnsupportedChallenge("Digest challenge without a nonce")
    algorithm = fields.get("algorithm", "MD5").upper()
    if algorithm.removesuffix("-SESS") not in _HASHES:
        raise UnsupportedChallenge(f"unsupported digest algorithm {algorithm}")
    qop = tuple(q.strip().lower() for q in fields.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        raise UnsupportedChallenge(f"unsupported qop {fields['qop']}")
    return Challenge(fields.get("realm", ""), fields["nonce"], algorithm, qop, fields.get("opaque"))


def digest_credentials(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nonce_count: int = 1,
) -> str:
    """The Authorization / Proxy-Authorization value answering a challenge (qop=auth when the
    challenge offers it, RFC 2069 style when it offers none)."""
    algorithm = challenge.algorithm
    hash_fn = _HASHES[algorithm.removesuffix("-SESS")]

    def h(text: str) -> str:
        return hash_fn(text.encode()).hexdigest()

    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    nc = f"{nonce_count:08x}"
    if challenge.qop:
        response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}")
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
    parts = [
        f'username="{username}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if challenge.qop:
        parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)
