"""A real WebSocket agent on loopback for the media tests: it takes outdial's streams, checks
each upgrade's Standard Webhooks signature with the spec's own library, records every message,
and lets the test speak for the agent (send media, marks, clears, garbage, or close)."""

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from outdial.signing import new_secret
from outdial.telephony.base import StreamTarget

ULAW_SILENCE_FRAME = b"\xff" * 160


@dataclass(eq=False)
class AgentCall:
    """One stream the agent took: its upgrade request and every message it received."""

    ws: ServerConnection
    path: str
    headers: Headers
    signature_valid: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == event]

    @property
    def events(self) -> list[str]:
        return [m["event"] for m in self.messages]

    @property
    def start(self) -> dict[str, Any]:
        [start] = self.of("start")
        return start

    def audio(self) -> bytes:
        """Every `media` payload received, in the order received, decoded."""
        return b"".join(base64.b64decode(m["media"]["payload"]) for m in self.of("media"))

    async def wait_for(self, found: Callable[["AgentCall"], bool], within: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found(self)), within)

    async def wait_for_event(self, event: str, within: float = 5.0) -> dict[str, Any]:
        await self.wait_for(lambda call: bool(call.of(event)), within)
        return self.of(event)[0]

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send as the agent: a dict as JSON, a str or bytes as they are (for garbage)."""
        data = json.dumps(message) if isinstance(message, dict) else message
        await self.ws.send(data)

    async def send_audio(self, ulaw: bytes) -> None:
        await self.send(
            {
                "event": "media",
                "streamSid": self.start["streamSid"] if self.of("start") else "",
                "media": {"payload": base64.b64encode(ulaw).decode()},
            }
        )

    async def _record(self, message: dict[str, Any]) -> None:
        async with self._changed:
            self.messages.append(message)
            self.received_at.append(asyncio.get_running_loop().time())
            self._changed.notify_all()

    async def _closed(self) -> None:
        async with self._changed:
            self.closed.set()
            self._changed.notify_all()


Script = Callable[[AgentCall], Awaitable[None]]


async def greet(call: AgentCall) -> None:
    """The default agent: once the stream starts, it says something (20 ms of silence), so
    the call is not abandoned; then it listens."""
    await call.wait_for_event("start")
    await call.send_audio(ULAW_SILENCE_FRAME)


@dataclass
class AgentPeer:
    url: str
    secret: str
    """What upgrades must be signed with (set it to an agent's stream_secret)."""
    calls: list[AgentCall]
    _arrived: asyncio.Condition

    def target(self, attempt_id: str = "att_media", **fields: Any) -> StreamTarget:
        """A StreamTarget for a dial whose agent is this peer."""
        values: dict[str, Any] = {
            "url": self.url,
            "secret": self.secret,
            "call_id": "call_1",
            "participant_id": "participant_1",
            "attempt_id": attempt_id,
            "agent_id": "0193f0c2-0000-7000-8000-000000000001",
            "to": "+15551230001",
            "from_number": "+15559990000",
            "batch_id": "batch_1",
            "variables": {"first_name": "Ada", "plan": "gold"},
            **fields,
        }
        return StreamTarget(**values)

    async def next_call(self, within: float = 5.0) -> AgentCall:
        """The next stream the agent is given (the first not yet taken by this method)."""
        async with self._arrived:
            taken = getattr(self, "_taken", 0)
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.calls) > taken), within)
            self._taken = taken + 1  # type: ignore[attr-defined]
            return self.calls[taken]


@asynccontextmanager
async def agent_peer(script: Script = greet, *, path: str = "/agent") -> AsyncIterator[AgentPeer]:
    """Serve an agent on a free loopback port; each stream runs `script` while the agent
    records what it receives."""
    calls: list[AgentCall] = []
    arrived = asyncio.Condition()
    peers: list[AgentPeer] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        headers = ws.request.headers
        peer = peers[0]
        try:
            Webhook(peer.secret).verify(peer.url, dict(headers.raw_items()), json_parse=False)
            valid = True
        except Exception:
            valid = False
        call = AgentCall(ws, ws.request.path, headers, valid)
        async with arrived:
            calls.append(call)
            arrived.notify_all()
        task = asyncio.create_task(script(call))
        try:
            async for raw in ws:
                await call._record(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            await call._closed()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        peers.append(AgentPeer(f"ws://127.0.0.1:{port}{path}", new_secret(), calls, arrived))
        yield peers[0]
