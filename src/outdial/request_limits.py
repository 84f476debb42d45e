"""Limits every HTTP request meets before a route sees it (see README, "Limits").

- A request body is at most `max_body_bytes`: refused with 413 from its Content-Length before
  it is read, or as soon as a chunked body grows past it. `text/csv` bodies of the routes that
  stream them (CSV_STREAMS) have no total limit: they are read a record at a time, and their
  records are bounded where they are parsed.
- A body must keep arriving: 408 when no byte of it came for `body_idle_seconds`, or when a
  bounded body is not complete `body_deadline_seconds` after the request began to be read. A
  request that announces a gigabyte and sends a few bytes holds its connection no longer.
  413 and 408 close the connection: the rest of the body is never read.
- The path and the query string hold no NUL character (`%00`): such a request is a 400 that
  names the part, as the request schemas do for the body (see `validation`). A lone surrogate
  cannot arrive there (the server decodes them, replacing what is not UTF-8).

Pure ASGI, not Starlette's RequestBodyLimitMiddleware: that one answers plain text, not the
contract's error JSON, knows no streamed routes, and has no timeouts. It costs the hot path a
few header comparisons and one timer per body chunk."""

import asyncio
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outdial.errors import error_body
from outdial.validation import printable, unstorable_character

CSV_STREAMS = re.compile(r"(/v1)?/campaigns/[^/]+/contacts|/v1/dnc/import")
"""The routes whose `text/csv` bodies are streamed, of any size."""

_CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"The request body is larger than {limit:,} bytes, the limit.", headers=_CLOSE
        )


class BodyTimeout(HTTPException):
    def __init__(self, why: str) -> None:
        super().__init__(408, f"The request body {why}.", headers=_CLOSE)


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_idle_seconds: float,
        body_deadline_seconds: float,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_idle_seconds = body_idle_seconds
        self.body_deadline_seconds = body_deadline_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bad_target = _nul_in_target(scope)
        if bad_target is not None:
            await _answer(send, 400, bad_target)
            return
        length, content_type = _length_and_type(scope)
        streamed = content_type == "text/csv" and CSV_STREAMS.fullmatch(scope["path"]) is not None
        limit = None if streamed else self.max_body_bytes
        if limit is not None and length is not None and length > limit:
            too_large = BodyTooLarge(limit)
            await _answer(send, 413, error_body("request_too_large", too_large.detail))
            return
        body = _GuardedBody(
            receive,
            limit=limit,
            idle=self.body_idle_seconds,
            deadline=None if streamed else self.body_deadline_seconds,
        )
        await self.app(scope, body.receive, send)


class _GuardedBody:
    """The `receive` a route reads its body through: counted and timed until it is complete,
    then passed through (a route may wait on it for the client to disconnect)."""

    __slots__ = ("_deadline", "_idle", "_limit", "_receive", "_received", "_started", "done")

    def __init__(
        self, receive: Receive, *, limit: int | None, idle: float, deadline: float | None
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._idle = idle
        self._deadline = deadline
        self._received = 0
        self._started: float | None = None
        self.done = False

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        now = asyncio.get_running_loop().time()
        if self._started is None:
            self._started = now
        timeout = self._idle
        if self._deadline is not None:
            timeout = min(timeout, self._started + self._deadline - now)
        try:
            async with asyncio.timeout(timeout):
                message = await self._receive()
        except TimeoutError:
            idle = timeout == self._idle
            raise BodyTimeout(
                f"stopped arriving (nothing for {self._idle:g} s)"
                if idle
                else f"was not complete within {self._deadline:g} s"
            ) from None
        if message["type"] != "http.request":
            self.done = True
            return message
        self._received += len(message.get("body", b""))
        if self._limit is not None and self._received > self._limit:
            raise BodyTooLarge(self._limit)
        if not message.get("more_body", False):
            self.done = True
        return message


def _length_and_type(scope: Scope) -> tuple[int | None, str]:
    length: int | None = None
    content_type = ""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None  # the server refuses a malformed one before we see it
        elif name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
    return length, content_type


def _nul_in_target(scope: Scope) -> dict[str, Any] | None:
    """The error answer for a NUL in the path or the query string, or None."""
    loc: list[str] | None = None
    path: str = scope["path"]
    if "\x00" in path:
        loc, text = ["path"], path
    elif b"%00" in scope["query_string"]:
        query = scope["query_string"].decode("latin-1")
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                loc, text = ["query", printable(name)], value if "\x00" in value else name
                break
    if loc is None:
        return None
    problem = unstorable_character(text) or "contains a NUL character"
    detail = {"loc": loc, "message": f"Text {problem}.", "type": "unstorable_text"}
    return error_body("validation_error", f"Invalid request: {'.'.join(loc)}.", [detail])


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    content = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    if status != 400:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
