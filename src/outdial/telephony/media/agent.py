"""One answered call's WebSocket to its agent, speaking the Twilio Media Streams protocol.

Towards the agent: `connected`, `start` (with the call's `customParameters`), `media` (the
callee's audio, base64 μ-law in 20 ms frames, track `inbound`), `dtmf`, `mark` (its own marks
echoed once the audio queued before them has been played) and `stop`. From the agent:
`media` (μ-law, any size: queued and played out 20 ms a packet by the provider's clock),
`mark` and `clear` (drop what is queued: barge-in). The agent ends the call by closing the
socket. A frame that is not one of these (bad JSON, bad base64, an unknown event) is logged
and ignored; the call goes on.

The upgrade request is signed with Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature`), the signed content being the full stream URL, with
the agent's `stream_secret`.

The socket is driven with `websockets`' Sans-I/O protocol on an asyncio Protocol: frames are
written as soon as audio arrives, in the callback that received it, with no task or queue per
call, which is what lets one process carry hundreds of calls. The text frames each way, 50 a
second per call, are written and split by `wsframes` itself (a fraction of the protocol
object's cost); the handshake, control frames, fragments and errors are still `websockets`'."""

import asyncio
import binascii
import json
import logging
import secrets
import ssl
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from outdial.signing import signature_headers
from outdial.telephony.base import AnsweredBy, StreamTarget
from outdial.telephony.media.playout import Playout
from outdial.telephony.media.wsframes import MaskKeys, frame_bounds, is_plain_text, text_frame

log = logging.getLogger(__name__)

AGENT_MEDIA_TIMEOUT = 2.0
"""An agent that cannot be reached, or sends no audio this long after the answer, is
unavailable: the call is hung up (API.md, "Voice")."""
CLOSE_TIMEOUT = 2.0
"""How long a closed stream waits for the agent to close its end of the connection."""
MAX_MESSAGE_BYTES = 1 << 20
"""The largest message taken from an agent (1 MiB: over a minute of audio)."""
MAX_RESPONSE_BYTES = 1 << 16
"""The most of the agent's answer to the upgrade request buffered while looking for its end."""

_MEDIA = (
    b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
    b'"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
)


class StreamEnd(StrEnum):
    """Why a stream ended the call (a stream we stop ourselves reports nothing)."""

    AGENT_CLOSED = "agent_closed"
    """The agent closed the socket: it hung up."""
    AGENT_UNAVAILABLE = "agent_unavailable"
    """The agent could not be reached, or sent no audio within AGENT_MEDIA_TIMEOUT."""


class AgentStream(asyncio.Protocol):
    """The WebSocket of one answered call to its agent. `start` connects (in a task of its
    own) and starts the AGENT_MEDIA_TIMEOUT deadline; `send_audio` and `send_dtmf` carry the
    callee's side; `next_frame` is the agent's audio, 20 ms at a time, for the provider's
    clock; `stop` ends the stream when the call ended on the phone's side. When the agent
    ends it (closing, or unavailable), `on_end` is called, once."""

    live = 0
    """Streams of this process started and not yet finished (the `outdial_media_streams`
    gauge)."""

    def __init__(
        self,
        target: StreamTarget,
        *,
        answered_by: AnsweredBy,
        on_end: Callable[[StreamEnd], None],
    ) -> None:
        self.target = target
        self.answered_by = answered_by
        self.on_end = on_end
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self._sid = self.stream_sid.encode()
        self.playout = Playout(self._send_mark)
        self.agent_frames = 0
        """`media` messages the agent sent."""
        self.agent_bytes = 0
        """Audio bytes (μ-law samples) in them."""
        self.malformed = 0
        self._ws: ClientProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._opening: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._pending: list[bytes] = []
        """Messages to send once the socket is open."""
        self._out: list[bytes] = []
        """Frames to write at the next `_write`, before what `websockets` has to send."""
        self._masks = MaskKeys()
        self._inbox = b""
        """What arrived from the agent and is not a whole frame yet."""
        self._fed = False
        """Set when `websockets` has read something since `data_received` last looked."""
        self._all_to_websockets = False
        """Set once a frame too large came: from then on `websockets` reads everything (and
        fails the connection)."""
        self._fragments: list[bytes] | None = None
        self._sequence = 0
        self._chunk = 0
        self._first_timestamp: int | None = None
        self._open = False
        self._finished = False
        self._flush_scheduled = False
        self._started = False

    # --- the call's side -----------------------------------------------------------------

    def start(self) -> None:
        """Connect to the agent (the call was just answered); `on_end(AGENT_UNAVAILABLE)` if
        it cannot be reached or sends no audio within AGENT_MEDIA_TIMEOUT."""
        loop = asyncio.get_running_loop()
        AgentStream.live += 1
        self._started = True
        self._deadline = loop.call_later(AGENT_MEDIA_TIMEOUT, self._no_media_in_time)
        self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._send_json(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": {
                    "streamSid": self.stream_sid,
                    "callSid": self.target.participant_id,
                    "tracks": ["inbound"],
                    "customParameters": self.target.custom_parameters(self.answered_by),
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": 8000,
                        "channels": 1,
                    },
                },
                "streamSid": self.stream_sid,
            }
        )
        self._opening = loop.create_task(self._connect(), name=f"stream {self.target.attempt_id}")

    def send_audio(self, ulaw: bytes, timestamp: int) -> None:
        """One frame of the callee's audio; `timestamp`: its RTP timestamp (8 kHz)."""
        if self._finished:
            return
        if self._first_timestamp is None:
            self._first_timestamp = timestamp
        millis = ((timestamp - self._first_timestamp) % (1 << 32)) // 8
        self._chunk += 1
        self._sequence += 1
        payload = binascii.b2a_base64(ulaw, newline=False)
        self._send(_MEDIA % (self._sequence, self._chunk, millis, payload, self._sid))

    def send_dtmf(self, digit: str) -> None:
        """A key the callee pressed."""
        self._send_json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def next_frame(self) -> bytes | None:
        """The agent's next 20 ms for the callee (μ-law), or None when it has none."""
        return self.playout.next_frame()

    def played(self) -> None:
        """The frame `next_frame` gave has been sent: echo the marks it completes."""
        self.playout.echo_played_marks()

    def stop(self) -> None:
        """The call ended on the phone's side: send `stop` and close the socket."""
        if self._finished:
            return
        self._send_json(
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "stop": {"callSid": self.target.participant_id},
            }
        )
        self._finish()
        if self._open and self._ws is not None and self._ws.state is State.OPEN:
            self._ws.send_close(1000, "call ended")
            self._write()
            self._close_later()
        elif not self._open:
            self._abort()

    # --- connecting ------------------------------------------------------------------------

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        uri = parse_uri(self.target.url)
        try:
            context = ssl.create_default_context() if uri.secure else None
            await loop.create_connection(
                lambda: self,
                uri.host,
                uri.port,
                ssl=context,
                server_hostname=uri.host if context else None,
            )
            assert self._ws is not None and self._handshake is not None
            await self._handshake
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("agent stream %s unreachable: %s", self.target.attempt_id, exc)
            self._end(StreamEnd.AGENT_UNAVAILABLE)
            return
        self._open = True
        pending, self._pending = self._pending, []
        self._out.extend(text_frame(message, self._masks.next()) for message in pending)
        self._write()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment] - a stream transport (uvloop's too)
        self._handshake = asyncio.get_running_loop().create_future()
        uri = parse_uri(self.target.url)
        self._ws = ClientProtocol(uri, max_size=MAX_MESSAGE_BYTES)
        request = self._ws.connect()
        for name, value in signature_headers(
            self.target.secret, msg_id=self.stream_sid, payload=self.target.url
        ).items():
            request.headers[name] = value
        request.headers["User-Agent"] = "outdial"
        self._ws.send_request(request)
        self._write()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        if ws.state is State.CONNECTING and ws.handshake_exc is None:
            data = self._take_response(data)
        if data:
            if ws.state is State.OPEN and not self._all_to_websockets:
                self._split_frames(data)
            else:
                self._feed(data)
        if self._fed:  # only what `websockets` read can have it answer, or expect a close
            self._fed = False
            self._write()
            if ws.close_expected():
                self._close_later()

    def _take_response(self, data: bytes) -> bytes:
        """Give `websockets` the agent's answer to the upgrade request, and only that (so
        that it holds no part of a frame that follows); answers what came after it."""
        self._inbox += data
        end = self._inbox.find(b"\r\n\r\n")
        if end < 0 and len(self._inbox) < MAX_RESPONSE_BYTES:
            return b""
        split = len(self._inbox) if end < 0 else end + 4
        response, rest = self._inbox[:split], self._inbox[split:]
        self._inbox = b""
        self._feed(response)
        return rest

    def _split_frames(self, data: bytes) -> None:
        """Take each whole frame that has arrived: a plain text frame is a message; any other
        frame (control, fragment, binary) goes to `websockets` whole, as does everything from
        a frame too large on, or once the socket is closing."""
        assert self._ws is not None
        buffer = self._inbox + data if self._inbox else data
        start = 0
        while start < len(buffer):
            bounds = frame_bounds(buffer, start)
            if bounds is None:
                break
            payload_start, end = bounds
            if end - payload_start > MAX_MESSAGE_BYTES or self._ws.state is not State.OPEN:
                self._all_to_websockets = True
                self._inbox = b""
                self._feed(buffer[start:])
                return
            if end > len(buffer):
                break
            if self._fragments is None and is_plain_text(buffer, start):
                self._on_message(buffer[payload_start:end])
            else:
                self._feed(buffer[start:end])
            start = end
        self._inbox = buffer[start:]

    def _feed(self, data: bytes) -> None:
        """Data for `websockets`' own parser: the handshake's answer, or whole frames."""
        assert self._ws is not None
        self._fed = True
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Response):
                self._handshaken()
            elif isinstance(event, Frame):
                self._on_frame(event)

    def eof_received(self) -> bool | None:
        if self._ws is not None:
            self._ws.receive_eof()
            self._write()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ConnectionError("closed during the handshake"))
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._transport = None
        if self._open and not self._finished:
            log.info("agent closed stream %s", self.target.attempt_id)
            self._end(StreamEnd.AGENT_CLOSED if self.agent_frames else StreamEnd.AGENT_UNAVAILABLE)

    def _handshaken(self) -> None:
        assert self._ws is not None and self._handshake is not None
        if self._handshake.done():
            return
        if self._ws.handshake_exc is not None:
            self._handshake.set_exception(self._ws.handshake_exc)
        else:
            self._handshake.set_result(None)

    # --- frames from the agent -------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT:
            if frame.fin:
                self._on_message(frame.data)
            else:
                self._fragments = [frame.data]
        elif frame.opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(frame.data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._on_message(data)
        elif frame.opcode is Opcode.CLOSE:
            # The protocol answers the close frame; the agent has hung up from now.
            self._end(StreamEnd.AGENT_CLOSED if self.agent_frames else StreamEnd.AGENT_UNAVAILABLE)
        elif frame.opcode is Opcode.BINARY or frame.opcode is Opcode.CONT:
            self._malformed("a binary frame")
        # PING and PONG are answered by the protocol itself.

    def _on_message(self, data: bytes) -> None:
        if self._finished:
            return
        try:
            message = json.loads(data.decode())  # a text frame is UTF-8 (RFC 6455 §5.6)
            event = message["event"]
            if event == "media":
                audio = binascii.a2b_base64(message["media"]["payload"], strict_mode=True)
                self._on_media(audio)
            elif event == "mark":
                self.playout.add_mark(str(message["mark"]["name"]))
            elif event == "clear":
                self.playout.clear()
            else:
                self._malformed(f"an unknown event {event!r}")
        except (ValueError, KeyError, TypeError) as exc:  # JSON, UTF-8 and base64 errors
            self._malformed(f"{type(exc).__name__}: {exc}")

    def _on_media(self, audio: bytes) -> None:
        self.agent_frames += 1
        self.agent_bytes += len(audio)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.playout.add_audio(audio)

    def _malformed(self, what: str) -> None:
        self.malformed += 1
        # One warning per stream: an agent repeating a bad frame 50 times a second would
        # otherwise bury every other line of the log.
        level = logging.WARNING if self.malformed == 1 else logging.DEBUG
        log.log(level, "agent stream %s: ignored %s", self.target.attempt_id, what)

    def _send_mark(self, name: str) -> None:
        self._send_json(
            {
                "event": "mark",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    # --- plumbing --------------------------------------------------------------------------

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _send_json(self, message: dict[str, Any]) -> None:
        self._send(json.dumps(message, separators=(",", ":")).encode())

    def _send(self, message: bytes) -> None:
        if not self._open or self._ws is None:
            self._pending.append(message)
            return
        if self._ws.state is not State.OPEN:
            return  # closing: the agent hears nothing more
        self._out.append(text_frame(message, self._masks.next()))
        # Written once the current callback is done: the frames one packet yields (or one
        # tick's mark echoes) leave in one system call instead of one each.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._flush_scheduled = False
        if self._ws is None or self._transport is None:
            self._out.clear()
            return
        chunks = self._ws.data_to_send()
        end = b"" in chunks
        # Ours first: a close frame `websockets` queued must follow the messages before it.
        data = b"".join(self._out + chunks)
        self._out.clear()
        if data:
            self._transport.write(data)
        if end:  # the protocol's signal to half-close, after what it sent before
            if self._transport.can_write_eof():
                self._transport.write_eof()
            else:
                self._transport.close()

    def _close_later(self) -> None:
        if self._close_timer is None and self._transport is not None:
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        opening = self._opening
        if opening is not None and not opening.done() and opening is not asyncio.current_task():
            opening.cancel()
        if self._transport is not None:
            self._transport.abort()

    def _no_media_in_time(self) -> None:
        self._deadline = None
        if not self._finished:
            log.warning(
                "agent stream %s sent no audio within %.0f s of the answer",
                self.target.attempt_id,
                AGENT_MEDIA_TIMEOUT,
            )
            self._end(StreamEnd.AGENT_UNAVAILABLE)

    def _end(self, reason: StreamEnd) -> None:
        """The agent ended the call (closed, or unavailable): tell the call, once. An agent
        found unavailable while its socket is open is sent `stop` and closed."""
        if self._finished:
            return
        if reason is StreamEnd.AGENT_UNAVAILABLE:
            self.stop()
        else:
            self._finish()
        self.on_end(reason)

    def _finish(self) -> None:
        if self._started and not self._finished:
            AgentStream.live -= 1
        self._finished = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    @property
    def finished(self) -> bool:
        return self._finished
