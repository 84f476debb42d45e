"""Local fake Plivo and Twilio REST APIs, served over real HTTP on 127.0.0.1.

Each checks every request the way the carrier documents it (path, HTTP basic auth, method,
required parameters and their formats), answers like the carrier, and records the request.
A request that breaks the documented rules is answered 400 and listed in `problems`, which
tests assert empty. These are fakes: the real services are never reached by the tests."""

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    """The JSON body (Plivo) or the form as a list of pairs (Twilio)."""


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _callback_url_problems(name: str, url: object) -> list[str]:
    if not isinstance(url, str):
        return [f"{name} missing"]
    parts = urlsplit(url)
    problems = []
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(f"{name} is not an absolute URL: {url}")
    if "attempt" not in parse_qs(parts.query):
        problems.append(f"{name} names no attempt: {url}")
    return problems


@dataclass
class FakeCarrier:
    user: str
    token: str
    requests: list[Recorded] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    """call id → queued | live | ended"""
    refuse_with: int | None = None
    """Answer the next dial requests with this error status."""

    def _authorized(self, request: Request) -> bool:
        if request.headers.get("authorization") == _basic(self.user, self.token):
            return True
        self.problems.append(f"{request.method} {request.url.path}: bad or missing basic auth")
        return False

    def _record(self, request: Request, body: Any) -> None:
        self.requests.append(
            Recorded(request.method, request.url.path, dict(request.query_params), body)
        )

    def of(self, method: str, suffix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]


class FakePlivo(FakeCarrier):
    """Plivo's Voice API: Make a call, Hang up / Cancel, Retrieve a live, queued or ended call."""

    def __init__(self, auth_id: str, auth_token: str) -> None:
        super().__init__(auth_id, auth_token)
        self.records: dict[str, dict[str, Any]] = {}
        """Call detail records of ended calls, by call uuid."""
        base = f"/v1/Account/{auth_id}"
        self.app = Starlette(
            routes=[
                Route(f"{base}/Call/", self._make_call, methods=["POST"]),
                Route(f"{base}/Call/{{uuid}}/", self._call, methods=["GET", "DELETE"]),
                Route(f"{base}/Request/{{uuid}}/", self._cancel, methods=["DELETE"]),
            ]
        )

    async def _make_call(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "authentication failed"}, 401)
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            self.problems.append("Make a call: body is not JSON")
            return JSONResponse({"error": "invalid content type"}, 400)
        body = await request.json()
        self._record(request, body)
        problems = []
        for name in ("from", "to"):
            if not str(body.get(name, "")).isdigit():
                problems.append(f"{name} must be E.164 digits: {body.get(name)!r}")
        for name in ("answer_url", "ring_url", "hangup_url"):
            if name != "answer_url" and name not in body:
                continue
            problems += _callback_url_problems(name, body.get(name))
        for name in ("answer_method", "ring_method", "hangup_method"):
            if name in body and body[name] not in ("GET", "POST"):
                problems.append(f"{name} must be GET or POST")
        ring_timeout = body.get("ring_timeout")
        if ring_timeout is not None and not (isinstance(ring_timeout, int) and ring_timeout > 0):
            problems.append(f"ring_timeout must be a positive integer: {ring_timeout!r}")
        if body.get("machine_detection") not in (None, "true", "hangup"):
            problems.append("machine_detection must be true or hangup")
        if problems:
            self.problems += problems
            return JSONResponse({"error": problems}, 400)
        if self.refuse_with is not None:
            return JSONResponse({"error": "refused by the test"}, self.refuse_with)
        request_uuid = str(uuid.uuid4())
        self.state[request_uuid] = "queued"
        return JSONResponse(
            {"api_id": str(uuid.uuid4()), "message": "call fired", "request_uuid": request_uuid},
            201,
        )

    async def _call(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "authentication failed"}, 401)
        self._record(request, None)
        call_uuid = request.path_params["uuid"]
        state = self.state.get(call_uuid)
        if request.method == "DELETE":
            if state in ("queued", "live"):
                self.state[call_uuid] = "ended"
                return Response(status_code=204)
            return JSONResponse({"error": "not found"}, 404)
        wanted = request.query_params.get("status")
        if wanted in ("live", "queued"):
            if state == wanted:
                return JSONResponse({"call_uuid": call_uuid, "call_status": wanted})
            return JSONResponse({"error": "not found"}, 404)
        if call_uuid in self.records:
            return JSONResponse(self.records[call_uuid])
        return JSONResponse({"error": "not found"}, 404)

    async def _cancel(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "authentication failed"}, 401)
        self._record(request, None)
        request_uuid = request.path_params["uuid"]
        if self.state.get(request_uuid) == "queued":
            self.state[request_uuid] = "ended"
            return Response(status_code=204)
        return JSONResponse({"error": "not found"}, 404)


TWILIO_EVENTS = {"initiated", "ringing", "answered", "completed"}


class FakeTwilio(FakeCarrier):
    """Twilio's Calls API: create, update (Status=completed|canceled) and fetch a call."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        super().__init__(account_sid, auth_token)
        self.calls: dict[str, dict[str, Any]] = {}
        base = f"/2010-04-01/Accounts/{account_sid}"
        self.app = Starlette(
            routes=[
                Route(f"{base}/Calls.json", self._create, methods=["POST"]),
                Route(f"{base}/Calls/{{sid}}.json", self._call, methods=["GET", "POST"]),
            ]
        )

    async def _form(self, request: Request) -> list[tuple[str, str]] | None:
        if request.headers.get("content-type", "").split(";")[0] != (
            "application/x-www-form-urlencoded"
        ):
            self.problems.append(f"{request.url.path}: body is not form-encoded")
            return None
        return parse_qsl((await request.body()).decode(), keep_blank_values=True)

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return _twilio_error(401, 20003, "Authenticate")
        form = await self._form(request)
        if form is None:
            return _twilio_error(400, 21200, "Bad content type")
        self._record(request, form)
        fields = dict(form)
        problems = []
        for name in ("To", "From"):
            value = fields.get(name, "")
            if not (value.startswith("+") and value[1:].isdigit()):
                problems.append(f"{name} must be E.164: {value!r}")
        if not ("Url" in fields or "Twiml" in fields):
            problems.append("Url or Twiml is required")
        if "Url" in fields:
            problems += _callback_url_problems("Url", fields["Url"])
        problems += _callback_url_problems("StatusCallback", fields.get("StatusCallback"))
        events = {v for k, v in form if k == "StatusCallbackEvent"}
        if not events or not events <= TWILIO_EVENTS:
            problems.append(f"StatusCallbackEvent must be among {TWILIO_EVENTS}: {events}")
        if not fields.get("Timeout", "").isdigit():
            problems.append("Timeout must be whole seconds")
        if fields.get("MachineDetection") not in (None, "Enable", "DetectMessageEnd"):
            problems.append("MachineDetection must be Enable or DetectMessageEnd")
        if problems:
            self.problems += problems
            return _twilio_error(400, 21201, "; ".join(problems))
        if self.refuse_with is not None:
            return _twilio_error(self.refuse_with, 21210, "refused by the test")
        sid = "CA" + uuid.uuid4().hex
        self.calls[sid] = {"sid": sid, "status": "queued", "duration": None, "answered_by": None}
        return JSONResponse(self.calls[sid], 201)

    async def _call(self, request: Request) -> Response:
        if not self._authorized(request):
            return _twilio_error(401, 20003, "Authenticate")
        sid = request.path_params["sid"]
        if request.method == "GET":
            self._record(request, None)
        else:
            form = await self._form(request)
            self._record(request, form)
            status = dict(form or []).get("Status")
            if status not in ("completed", "canceled"):
                self.problems.append(f"update: Status must be completed or canceled: {status}")
                return _twilio_error(400, 21218, "Invalid Status")
            if sid in self.calls:
                self.calls[sid]["status"] = status
        if sid not in self.calls:
            return _twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return JSONResponse(self.calls[sid])


def _twilio_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status)


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` over HTTP on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
