"""The SDP (RFC 4566) of a call's audio, offer/answer (RFC 3264) as the `sip` provider makes
it: the offer names our RTP port and offers PCMU, PCMA and telephone-event; the answer names
the far end's address, and which of our codecs it chose."""

import secrets
from dataclasses import dataclass

PCMU = 0
PCMA = 8
TELEPHONE_EVENT = 101
"""The dynamic payload type we offer for RFC 4733 events (the answer may name its own)."""
AUDIO_CODECS = (PCMU, PCMA)


@dataclass(frozen=True, slots=True)
class MediaAnswer:
    """What the far end's SDP answer says of the call's audio."""

    address: tuple[str, int]
    payload_type: int
    """PCMU (0) or PCMA (8): the first of ours the answer lists."""
    event_payload_type: int | None
    """Its telephone-event payload type, if it takes them."""


def sdp_offer(host: str, port: int) -> bytes:
    """An offer of G.711 (μ-law, then A-law) and telephone-events at host:port."""
    session = secrets.randbelow(2**31)
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=outdial {session} {session} IN {ip} {host}",
        "s=outdial",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {PCMU} {PCMA} {TELEPHONE_EVENT}",
        f"a=rtpmap:{PCMU} PCMU/8000",
        f"a=rtpmap:{PCMA} PCMA/8000",
        f"a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000",
        f"a=fmtp:{TELEPHONE_EVENT} 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def parse_answer(body: bytes) -> MediaAnswer | None:
    """The audio stream of an SDP answer; None when it has none we can use (no audio, a
    rejected one (port 0), no address, or neither PCMU nor PCMA)."""
    session_address: str | None = None
    media_address: str | None = None
    port: int | None = None
    formats: list[int] = []
    event_type: int | None = None
    in_audio = False
    for raw in body.decode("utf-8", "replace").splitlines():
        kind, _, value = raw.strip().partition("=")
        if kind == "m":
            if port is not None:
                break  # only the first audio stream is ours
            fields = value.split()
            in_audio = len(fields) >= 4 and fields[0] == "audio"
            if in_audio:
                try:
                    port = int(fields[1].split("/")[0])
                    formats = [int(f) for f in fields[3:] if f.isdigit()]
                except ValueError:
                    return None
        elif kind == "c":
            address = _connection_address(value)
            if port is None and not in_audio:
                session_address = address
            elif in_audio:
                media_address = address
        elif kind == "a" and in_audio and value.lower().startswith("rtpmap:"):
            number, _, encoding = value[len("rtpmap:") :].partition(" ")
            if encoding.lower().startswith("telephone-event/8000") and number.isdigit():
                event_type = int(number)
    address = media_address or session_address
    codec = next((f for f in formats if f in AUDIO_CODECS), None)
    if not port or address is None or codec is None:
        return None
    return MediaAnswer((address, port), codec, event_type if event_type in formats else None)


def _connection_address(value: str) -> str | None:
    """The address of `c=IN IP4 192.0.2.1` (a multicast TTL suffix dropped)."""
    fields = value.split()
    return fields[2].split("/")[0] if len(fields) >= 3 else None
