"""A real webhook receiver on loopback: an HTTP server (uvicorn) that records every request,
verifies its Standard Webhooks signature with the official `standardwebhooks` package and
answers what the test tells it to."""

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float  # time.time() when it arrived
    status: int | None = None  # what it was answered (None until then)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    secret: str | None = None
    """The endpoint's secret, once created: every request is verified with it."""
    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], int] = lambda _: 200
    """The status to answer a request with."""
    delay: float = 0.0
    """Seconds to wait before answering (a slow receiver)."""
    in_flight: int = 0
    most_in_flight: int = 0

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        if self.secret is None:
            return False
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r.event for r in self.received]

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.received]

    async def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        """Wait until at least `count` requests have arrived."""
        deadline = time.monotonic() + within
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} webhooks arrived")
            await asyncio.sleep(0.01)
        return self.received

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Received(
            path=scope["path"],
            headers=headers,
            body=body,
            verified=self.verify(body, headers),
            at=time.time(),
        )
        self.received.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            status = request.status = self.answer(request)
        finally:
            self.in_flight -= 1
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"nope"})


@asynccontextmanager
async def receiving(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """Serve a receiver on a free loopback port (its `url` set) for the `with` block."""
    receiver = receiver or Receiver()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"
    server = uvicorn.Server(
        uvicorn.Config(receiver, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
        sock.close()
