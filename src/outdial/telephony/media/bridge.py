"""The `sip` provider's relay of one call's audio: the callee's RTP ↔ the agent's stream.

From the callee: RTP on a UDP socket of the call's own (the port our SDP offer named), put in
order (`RtpReceiver`), A-law converted to μ-law, cut into 20 ms frames for the agent; RFC 4733
events become one `dtmf` each. To the callee: on every tick of the process's packet clock,
the agent's next 20 ms (or silence, which keeps the far end's NAT bindings and RTP timers
alive) in the negotiated codec."""

import asyncio
import logging
import secrets
from collections.abc import Callable

from outdial.telephony.base import StreamTarget
from outdial.telephony.media.agent import AgentStream, StreamEnd
from outdial.telephony.media.clock import PacketClock
from outdial.telephony.media.g711 import (
    ALAW_TO_ULAW,
    FRAME_BYTES,
    ULAW_SILENCE,
    ULAW_TO_ALAW,
)
from outdial.telephony.media.rtp import (
    HEADER_BYTES,
    Framer,
    KeyPresses,
    RtpPacket,
    RtpReceiver,
    parse_plain,
    parse_rtp,
    rtp_packet,
)
from outdial.telephony.media.sdp import PCMA, MediaAnswer

log = logging.getLogger(__name__)

GAP_WAIT_TICKS = 3
"""How many ticks (20 ms each) packets held behind a missing one wait before it is given up."""
_ULAW_SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES


class RtpBridge(asyncio.DatagramProtocol):
    """One call's RTP socket and its agent's stream. `open` binds the socket (before the
    INVITE: the offer names its port); `connect` starts relaying once the call is answered;
    `close` ends it (sending the agent `stop` unless the agent ended it)."""

    def __init__(self, target: StreamTarget, *, on_end: Callable[[StreamEnd], None]) -> None:
        self.target = target
        self.on_end = on_end
        self.port = 0
        self.stream: AgentStream | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._remote: tuple[str, int] | None = None
        self._codec = 0
        self._event_type: int | None = None
        self._receiver = RtpReceiver(self._on_packet)
        self._keys = KeyPresses()
        self._framer = Framer(self._on_frame)
        self._gap_ticks = 0
        self._clock: PacketClock | None = None
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._first_packet = True
        self.packets_in = 0
        self.packets_out = 0

    async def open(self, host: str) -> int:
        """Bind the call's RTP socket on `host`; answers its port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment] - a datagram endpoint's

    def connect(self, answer: MediaAnswer) -> None:
        """The call was answered with this SDP: start the agent's stream and the relay."""
        self._remote = answer.address
        self._codec = answer.payload_type
        self._event_type = answer.event_payload_type
        self.stream = AgentStream(self.target, answered_by="unknown", on_end=self.on_end)
        self.stream.start()
        self._clock = PacketClock.of_running_loop()
        self._clock.subscribe(self, self.tick)

    def close(self) -> None:
        """The call is over: stop relaying, send the agent `stop` (if it did not end the call
        itself), close the socket."""
        if self._clock is not None:
            self._clock.unsubscribe(self)
            self._clock = None
        if self.stream is not None and not self.stream.finished:
            self._receiver.flush()
            self._framer.flush()
            self.stream.stop()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- from the callee -------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.stream is None:
            return  # early media, before the answer: nobody to hear it yet
        plain = parse_plain(data, self._codec)
        if plain is not None:
            sequence, timestamp, ssrc = plain
            if self._receiver.take_next(sequence, ssrc):  # in order: the receiver has no work
                self.packets_in += 1
                self._on_audio(data[HEADER_BYTES:], timestamp)
                return
        packet = parse_rtp(data)
        if packet is not None:
            self.packets_in += 1
            self._receiver.push(packet)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the far end sets up its media: not fatal.
        log.debug("RTP socket of %s: %s", self.target.attempt_id, exc)

    def _on_packet(self, packet: RtpPacket) -> None:
        assert self.stream is not None
        if packet.payload_type == self._codec:
            self._on_audio(packet.payload, packet.timestamp)
        elif packet.payload_type == self._event_type:
            key = self._keys.key_of(packet)
            if key is not None:
                self.stream.send_dtmf(key)

    def _on_audio(self, audio: bytes, timestamp: int) -> None:
        if self._codec == PCMA:
            audio = audio.translate(ALAW_TO_ULAW)
        self._framer.push(audio, timestamp)

    def _on_frame(self, frame: bytes, timestamp: int) -> None:
        assert self.stream is not None
        self.stream.send_audio(frame, timestamp)

    # --- to the callee ---------------------------------------------------------------------

    def tick(self) -> None:
        """Send the callee the next 20 ms (called by the packet clock)."""
        if self._receiver.waiting:
            self._gap_ticks += 1
            if self._gap_ticks >= GAP_WAIT_TICKS:
                self._receiver.skip_gap()
                self._gap_ticks = 0
        else:
            self._gap_ticks = 0
        if self.stream is None or self._transport is None or self._remote is None:
            return
        frame = self.stream.next_frame() or _ULAW_SILENCE_FRAME
        if self._codec == PCMA:
            frame = frame.translate(ULAW_TO_ALAW)
        packet = rtp_packet(
            self._codec,
            self._sequence,
            self._timestamp,
            self._ssrc,
            frame,
            marker=self._first_packet,
        )
        self._transport.sendto(packet, self._remote)
        self.stream.played()
        self._first_packet = False
        self._sequence += 1
        self._timestamp += FRAME_BYTES
        self.packets_out += 1
