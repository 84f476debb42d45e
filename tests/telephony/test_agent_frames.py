"""An agent stream's WebSocket frames as the network may cut them: `AgentStream` splits the
agent's text frames itself (`media/wsframes.py`) and leaves every other frame to `websockets`,
so a raw agent (a TCP server driving `websockets`' server protocol by hand) writes the bytes in
the awkward ways TCP allows: part of a frame in the segment of the handshake's answer, a frame
a byte at a time, a ping and a fragmented message together, a frame too large, a close."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from outdial.signing import new_secret
from outdial.telephony.base import StreamTarget
from outdial.telephony.media.agent import MAX_MESSAGE_BYTES, AgentStream, StreamEnd


def media(audio: bytes) -> bytes:
    return json.dumps(
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {"payload": base64.b64encode(audio).decode()},
        }
    ).encode()


@dataclass
class RawAgent:
    """One accepted stream: its server protocol, and every frame outdial sent on it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ws: ServerProtocol = field(default_factory=lambda: ServerProtocol(max_size=None))
    frames: list[Frame] = field(default_factory=list)

    async def accept(self) -> bytes:
        """Read the upgrade request; answer the bytes of the 101 (not yet written)."""
        request = await self.reader.readuntil(b"\r\n\r\n")
        self.ws.receive_data(request)
        [event] = self.ws.events_received()
        assert isinstance(event, Request)
        self.ws.send_response(self.ws.accept(event))
        return self.pending()

    def pending(self) -> bytes:
        """What the protocol has to send (a frame just queued), taken to be written by hand."""
        return b"".join(self.ws.data_to_send())

    async def write(self, data: bytes, *, piecewise: bool = False) -> None:
        for piece in [data[i : i + 1] for i in range(len(data))] if piecewise else [data]:
            self.writer.write(piece)
            await self.writer.drain()
            if piecewise:
                await asyncio.sleep(0.002)  # each byte a segment of its own

    async def read_until(self, opcode: Opcode, within: float = 3.0) -> Frame:
        async def read() -> Frame:
            while True:
                for frame in [f for f in self.frames if f.opcode is opcode]:
                    return frame
                data = await self.reader.read(65536)
                assert data, "outdial closed the connection"
                self.ws.receive_data(data)
                self.frames += [e for e in self.ws.events_received() if isinstance(e, Frame)]

        return await asyncio.wait_for(read(), within)


@asynccontextmanager
async def raw_agent() -> AsyncIterator[tuple[AgentStream, "asyncio.Queue[RawAgent]", list]]:
    accepted: asyncio.Queue[RawAgent] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(RawAgent(reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = StreamTarget(
        url=f"ws://127.0.0.1:{port}/agent",
        secret=new_secret(),
        call_id="call_1",
        participant_id="participant_1",
        attempt_id="att_frames",
        agent_id="agent_1",
        to="+15551230001",
        from_number="+15559990000",
    )
    ends: list[StreamEnd] = []
    stream = AgentStream(target, answered_by="human", on_end=ends.append)
    try:
        async with server:
            stream.start()
            yield stream, accepted, ends
    finally:
        if not stream.finished:
            stream.stop()


async def played(stream: AgentStream, count: int) -> bytes:
    """The next `count` 20 ms frames of the agent's audio, waiting for them to arrive."""
    for _ in range(300):
        if stream.playout.waiting >= count * 160:
            return b"".join(stream.next_frame() or b"" for _ in range(count))
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {stream.playout.waiting} bytes of audio arrived")


async def test_frames_cut_every_way_reach_the_playout_in_order() -> None:
    one, two, three = (bytes([n]) * 160 for n in (1, 2, 3))
    async with raw_agent() as (stream, accepted, ends):
        agent = await asyncio.wait_for(accepted.get(), 3)
        answer = await agent.accept()
        agent.ws.send_text(media(one))
        frame = agent.pending()
        await agent.write(answer + frame[:20])  # the 101 and part of a frame in one segment
        await asyncio.sleep(0.05)
        await agent.write(frame[20:])
        start = await agent.read_until(Opcode.TEXT)
        assert json.loads(start.data)["event"] == "connected"
        assert await played(stream, 1) == one

        agent.ws.send_text(media(two))
        await agent.write(agent.pending(), piecewise=True)
        assert await played(stream, 1) == two

        agent.ws.send_ping(b"still there?")
        agent.ws.send_text(media(three)[:40], fin=False)
        agent.ws.send_continuation(media(three)[40:], fin=True)
        await agent.write(agent.pending())  # a ping and a fragmented message, together
        pong = await agent.read_until(Opcode.PONG)
        assert pong.data == b"still there?"
        assert await played(stream, 1) == three
        assert stream.malformed == 0

        agent.ws.send_close(1000, "bye")
        await agent.write(agent.pending())
        close = await agent.read_until(Opcode.CLOSE)
        assert close.data[:2] == (1000).to_bytes(2)
        for _ in range(100):
            if ends:
                break
            await asyncio.sleep(0.01)
        assert ends == [StreamEnd.AGENT_CLOSED]


async def test_a_frame_too_large_fails_the_connection() -> None:
    async with raw_agent() as (stream, accepted, ends):
        agent = await asyncio.wait_for(accepted.get(), 3)
        await agent.write(await agent.accept())
        agent.ws.send_text(media(b"\x01" * 160))
        agent.ws.send_text(b" " * (MAX_MESSAGE_BYTES + 1))
        data = agent.pending()
        await agent.write(data[: len(data) - MAX_MESSAGE_BYTES // 2])  # its header, not all of it
        close = await agent.read_until(Opcode.CLOSE)
        assert close.data[:2] == (1009).to_bytes(2)  # "message too big"
        assert await played(stream, 1) == b"\x01" * 160
        agent.writer.close()
        for _ in range(100):
            if ends:
                break
            await asyncio.sleep(0.01)
        assert ends == [StreamEnd.AGENT_CLOSED]  # the call is hung up
