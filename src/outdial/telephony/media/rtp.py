"""RTP (RFC 3550) as the `sip` provider's relay needs it: packets read and written, a remote
source's packets put back in order (duplicates and late arrivals dropped), RFC 4733
telephone-events turned into one key press each, and audio cut into 20 ms frames."""

import struct
from collections.abc import Callable
from dataclasses import dataclass

from outdial.telephony.media.g711 import FRAME_BYTES

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_SEQUENCE_TIMESTAMP_SSRC = struct.Struct("!HII")
_PLAIN_FIRST_BYTE = RTP_VERSION << 6
"""Version 2 with no padding, no header extension and no CSRC: nearly every packet."""
_FRAME_PACKET = struct.Struct(f"!BBHII{FRAME_BYTES}s")
HEADER_BYTES = _HEADER.size
SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32

MAX_DROPOUT = 3000
"""A jump ahead of more sequence numbers than this is a restarted source, not loss
(RFC 3550 A.1)."""
MAX_MISORDER = 100
"""A packet this far behind is a restarted source too; nearer, a late or repeated packet."""
REORDER_DEPTH = 4
"""How many packets are held waiting for a missing one (80 ms of 20 ms audio) before it is
given up as lost."""

DTMF_KEYS = "0123456789*#ABCD"
"""RFC 4733 §3.2: events 0-15 are the keypad's keys."""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False


def parse_rtp(data: bytes) -> RtpPacket | None:
    """A datagram as an RTP packet; None when it is not one (RTCP, STUN, garbage)."""
    if len(data) < HEADER_BYTES:
        return None
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        return None
    payload_type = second & 0x7F
    if 72 <= payload_type <= 76:
        return None  # RTCP on the RTP port (RFC 5761): its packet types read as 72-76
    start = HEADER_BYTES + 4 * (first & 0x0F)  # after the CSRC list
    if first & 0x10:  # a header extension: 4 bytes of profile and length, then its words
        if len(data) < start + 4:
            return None
        start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4])
    end = len(data)
    if first & 0x20:  # padding: its last byte counts the padding bytes
        end -= data[-1]
    if start > end:
        return None
    return RtpPacket(payload_type, sequence, timestamp, ssrc, data[start:end], bool(second & 0x80))


def parse_plain(data: bytes, payload_type: int) -> tuple[int, int, int] | None:
    """(sequence, timestamp, SSRC) of a plain packet of `payload_type` (the 12-byte header
    alone; its payload is `data[HEADER_BYTES:]`), without building an `RtpPacket`; None for any
    other datagram, which `parse_rtp` then reads."""
    if len(data) > HEADER_BYTES and data[0] == _PLAIN_FIRST_BYTE and data[1] & 0x7F == payload_type:
        return _SEQUENCE_TIMESTAMP_SSRC.unpack_from(data, 2)  # type: ignore[return-value]
    return None


def rtp_packet(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, frame: bytes, *, marker: bool
) -> bytes:
    """A packet of one 20 ms frame (FRAME_BYTES), with no CSRC, extension or padding."""
    return _FRAME_PACKET.pack(
        _PLAIN_FIRST_BYTE,
        payload_type | (0x80 if marker else 0),
        sequence % SEQUENCE_MODULO,
        timestamp % TIMESTAMP_MODULO,
        ssrc,
        frame,
    )


def _distance(sequence: int, expected: int) -> int:
    """How far `sequence` is ahead of `expected` (negative: behind), across the wrap."""
    ahead = (sequence - expected) % SEQUENCE_MODULO
    return ahead - SEQUENCE_MODULO if ahead >= SEQUENCE_MODULO // 2 else ahead


class RtpReceiver:
    """Hands one call's received packets on in sequence order, each once: a repeated packet,
    or one that comes after the stream has moved past it, is dropped; when one is missing,
    up to REORDER_DEPTH later packets wait for it (or `skip_gap`, on a timer) before it is
    given up as lost. A new SSRC, or a jump too far either way, starts over (a restarted
    source)."""

    def __init__(self, deliver: Callable[[RtpPacket], None]) -> None:
        self.deliver = deliver
        self.ssrc: int | None = None
        self.expected = 0
        self.held: dict[int, RtpPacket] = {}
        self.dropped = 0
        """Duplicates and late arrivals."""
        self.lost = 0
        """Sequence numbers given up on."""

    def push(self, packet: RtpPacket) -> None:
        """Take one received packet."""
        if packet.ssrc != self.ssrc:
            self._restart(packet)
            return
        distance = _distance(packet.sequence, self.expected)
        if distance > MAX_DROPOUT or distance < -MAX_MISORDER:
            self._restart(packet)
        elif distance < 0 or packet.sequence in self.held:
            self.dropped += 1
        elif distance == 0:
            self._deliver_from(packet)
        else:
            self.held[packet.sequence] = packet
            if len(self.held) > REORDER_DEPTH:
                self.skip_gap()

    def take_next(self, sequence: int, ssrc: int) -> bool:
        """Whether the packet with this sequence number and SSRC is the very one expected
        with none held (the common case, which the caller then delivers itself); if so, it
        is taken as delivered."""
        if sequence != self.expected or ssrc != self.ssrc or self.held:
            return False
        self.expected = (sequence + 1) % SEQUENCE_MODULO
        return True

    @property
    def waiting(self) -> bool:
        """Whether packets are held waiting for a missing one."""
        return bool(self.held)

    def skip_gap(self) -> None:
        """Give up on the missing packets before the first one held, and go on from it."""
        if not self.held:
            return
        first = min(self.held, key=lambda seq: _distance(seq, self.expected))
        self.lost += _distance(first, self.expected)
        self._deliver_from(self.held.pop(first))

    def flush(self) -> None:
        """Hand on everything held, in order (the call is ending)."""
        while self.held:
            self.skip_gap()

    def _restart(self, packet: RtpPacket) -> None:
        self.flush()
        self.ssrc = packet.ssrc
        self._deliver_from(packet)

    def _deliver_from(self, packet: RtpPacket) -> None:
        while True:
            self.deliver(packet)
            self.expected = (packet.sequence + 1) % SEQUENCE_MODULO
            following = self.held.pop(self.expected, None)
            if following is None:
                return
            packet = following


class KeyPresses:
    """RFC 4733 telephone-events as key presses. A press is sent as many packets (its start,
    updates of its duration, its end, the end repeated), all with the timestamp of its start;
    so a timestamp not seen before is a new press, and everything else repeats one."""

    def __init__(self) -> None:
        self._last_timestamp: int | None = None

    def key_of(self, packet: RtpPacket) -> str | None:
        """The key, when this packet starts a press of a keypad key; None otherwise."""
        if len(packet.payload) < 4 or packet.timestamp == self._last_timestamp:
            return None
        self._last_timestamp = packet.timestamp
        event = packet.payload[0]
        return DTMF_KEYS[event] if event < len(DTMF_KEYS) else None


class Framer:
    """Cuts audio into FRAME_BYTES frames, each with the RTP timestamp of its first sample."""

    def __init__(self, emit: Callable[[bytes, int], None]) -> None:
        self.emit = emit
        self._rest = b""
        """Audio short of a frame, waiting for the next packet's."""
        self._timestamp = 0
        """The timestamp of `_rest`'s first sample."""

    def push(self, audio: bytes, timestamp: int) -> None:
        """Add a packet's audio (μ-law) taken at `timestamp`."""
        if self._rest:
            audio, timestamp = self._rest + audio, self._timestamp
        at, last = 0, len(audio) - FRAME_BYTES
        while at <= last:
            self.emit(audio[at : at + FRAME_BYTES], timestamp)
            at += FRAME_BYTES
            timestamp = (timestamp + FRAME_BYTES) % TIMESTAMP_MODULO
        self._rest, self._timestamp = audio[at:], timestamp

    def flush(self) -> None:
        """Emit what is left, a frame shorter than 20 ms (the call is ending)."""
        if self._rest:
            self.emit(self._rest, self._timestamp)
            self._rest = b""
