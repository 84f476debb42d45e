"""Local fake Plivo and Twilio REST APIs and a fake LiveKit server API (with its webhooks),
served over real HTTP on 127.0.0.1.

Each checks every request the way the carrier documents it (path, HTTP basic auth, method,
required parameters and their formats), answers like the carrier, and records the request.
A request that breaks the documented rules is answered 400 and listed in `problems`, which
tests assert empty. `twiml_problems` and `plivo_xml_problems` check the documents our answer
URLs return against the carriers' XML references the same way. These are fakes: the real
services are never reached by the tests."""

import asyncio
import base64
import hashlib
import re
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import livekit.api as lk
import uvicorn
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.api import AccessToken, TokenVerifier
from livekit.api.access_token import Claims
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp


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
async def serving(app: ASGIApp) -> AsyncIterator[str]:
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


# --- the answer documents, checked against the carriers' XML references ----------------------


def _wss_problems(what: str, url: str | None, *, query_allowed: bool) -> list[str]:
    if not url:
        return [f"{what}: no URL"]
    parts = urlsplit(url)
    problems = []
    if parts.scheme != "wss" or not parts.netloc:
        problems.append(f"{what}: the stream URL must be an absolute wss:// URL: {url}")
    if parts.query and not query_allowed:
        problems.append(f"{what}: the stream URL may not have a query string: {url}")
    return problems


def twiml_problems(document: str) -> list[str]:
    """What breaks TwiML's rules in an answer document, as far as outdial uses them: a
    <Response> of <Pause length>, <Hangup/> or <Connect><Stream url> with <Parameter name value>
    children (the url wss:// only, and "does not support query string parameters")."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        return [f"not XML: {exc}"]
    if root.tag != "Response":
        return [f"the root is <{root.tag}>, not <Response>"]
    problems = []
    for verb in root:
        if verb.tag == "Pause":
            if not verb.get("length", "1").isdigit():
                problems.append("<Pause length> must be whole seconds")
        elif verb.tag == "Hangup":
            if len(verb) or (verb.text or "").strip():
                problems.append("<Hangup> takes nothing")
        elif verb.tag == "Connect":
            streams = list(verb)
            if [s.tag for s in streams] != ["Stream"]:
                problems.append("<Connect> must hold one <Stream>")
                continue
            stream = streams[0]
            problems += _wss_problems("<Stream>", stream.get("url"), query_allowed=False)
            for parameter in stream:
                if parameter.tag != "Parameter":
                    problems.append(f"<Stream> holds <{parameter.tag}>")
                elif not parameter.get("name") or parameter.get("value") is None:
                    problems.append("<Parameter> needs a name and a value")
        else:
            problems.append(f"<{verb.tag}> is not a verb outdial should send")
    return problems


_PLIVO_STREAM_ATTRIBUTES = {
    "bidirectional": {"true", "false"},
    "keepCallAlive": {"true", "false"},
    "audioTrack": {"inbound", "outbound", "both"},
    "contentType": {"audio/x-l16;rate=8000", "audio/x-l16;rate=16000", "audio/x-mulaw;rate=8000"},
}
_EXTRA_HEADERS = re.compile(r"[A-Za-z0-9]+=[A-Za-z0-9]+(,[A-Za-z0-9]+=[A-Za-z0-9]+)*")


def plivo_xml_problems(document: str) -> list[str]:
    """What breaks Plivo XML's rules in an answer document, as far as outdial uses them: a
    <Response> of <Wait length>, <Hangup/> or <Stream> (its URL as text; the attributes and
    values of Plivo's Stream reference; audioTrack inbound when bidirectional; keepCallAlive
    only when bidirectional; extraHeaders letters and digits only, 512 bytes at most)."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        return [f"not XML: {exc}"]
    if root.tag != "Response":
        return [f"the root is <{root.tag}>, not <Response>"]
    problems = []
    for verb in root:
        if verb.tag == "Wait":
            if not verb.get("length", "1").isdigit():
                problems.append("<Wait length> must be whole seconds")
        elif verb.tag == "Hangup":
            if len(verb) or (verb.text or "").strip():
                problems.append("<Hangup> takes nothing")
        elif verb.tag == "Stream":
            problems += _wss_problems("<Stream>", (verb.text or "").strip(), query_allowed=True)
            for name, value in verb.attrib.items():
                if name == "streamTimeout":
                    if not (value.isdigit() and int(value) > 0):
                        problems.append("streamTimeout must be a positive integer")
                elif name == "extraHeaders":
                    if len(value.encode()) > 512 or not _EXTRA_HEADERS.fullmatch(value):
                        problems.append(f"extraHeaders must be k=v pairs of [A-Za-z0-9]: {value}")
                elif name in ("statusCallbackUrl", "statusCallbackMethod"):
                    continue
                elif value not in _PLIVO_STREAM_ATTRIBUTES.get(name, ()):
                    problems.append(f"<Stream {name}={value!r}> is not allowed")
            bidirectional = verb.get("bidirectional") == "true"
            if bidirectional and verb.get("audioTrack", "inbound") != "inbound":
                problems.append("a bidirectional <Stream> streams the inbound track only")
            if verb.get("keepCallAlive") == "true" and not bidirectional:
                problems.append("keepCallAlive applies to bidirectional streams only")
        else:
            problems.append(f"<{verb.tag}> is not an element outdial should send")
    return problems


# --- LiveKit: its Twirp server API and its webhooks ----------------------------------------------

TWIRP_STATUS = {
    "canceled": 408,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
}
"""Twirp's error codes and the HTTP status each is sent with (the Twirp wire protocol)."""

_SIP_STATUS_TWIRP_CODE = {
    403: "permission_denied",
    404: "not_found",
    408: "deadline_exceeded",
    480: "resource_exhausted",
    486: "resource_exhausted",
    487: "aborted",
    600: "resource_exhausted",
    603: "permission_denied",
}
"""livekit/protocol livekit/sip.go (sipCodeToGRPCCode): the code a SIP failure is sent with;
other 4xx and 6xx are invalid_argument, 5xx failed_precondition."""


def _sip_failure_disconnect(status: int) -> int:
    """livekit/sip pkg/sip/errors.go (classifyInviteError): how a leg whose INVITE failed
    with `status` leaves its room."""
    reason = lk.DisconnectReason
    if status in (401, 403, 407, 486, 488) or 600 <= status < 700:
        return reason.USER_REJECTED
    if 400 <= status < 500:
        return reason.USER_UNAVAILABLE
    return reason.SIP_TRUNK_FAILURE


class TwirpFault(Exception):
    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg, self.meta = code, msg, meta or {}


@dataclass
class FakeRoom:
    info: lk.Room
    participants: dict[str, lk.ParticipantInfo] = field(default_factory=dict)


@dataclass
class FakeLeg:
    """A SIP participant the fake is dialing: the request, and what the test makes of it
    (`answer`, `fail`, `time_out`, or our own hang-up)."""

    request: lk.CreateSIPParticipantRequest
    info: lk.ParticipantInfo
    outcome: asyncio.Future[str | int]


_METHODS: dict[tuple[str, str], tuple[type[Any], str]] = {
    ("RoomService", "CreateRoom"): (lk.CreateRoomRequest, "_create_room"),
    ("RoomService", "DeleteRoom"): (lk.DeleteRoomRequest, "_delete_room"),
    ("RoomService", "ListParticipants"): (lk.ListParticipantsRequest, "_list_participants"),
    ("RoomService", "RemoveParticipant"): (lk.RoomParticipantIdentity, "_remove_participant"),
    ("AgentDispatchService", "CreateDispatch"): (lk.CreateAgentDispatchRequest, "_dispatch"),
    ("SIP", "CreateSIPParticipant"): (lk.CreateSIPParticipantRequest, "_create_sip_participant"),
}

Deliver = Callable[[str, dict[str, str]], Awaitable[int]]


class FakeLiveKit:
    """LiveKit's server API as livekit/protocol defines it (Twirp over HTTP: POST
    /twirp/livekit.<Service>/<Method>, protobuf or JSON bodies, errors as Twirp JSON), for
    the rooms, agent dispatch and outbound SIP outdial uses; and its webhooks.

    Every request must carry a token signed with the API key and secret and holding the grant
    the method needs (`livekit.api.TokenVerifier` checks it), else unauthenticated or
    permission_denied. A SIP participant joins its room at once (`sip.callStatus` dialing,
    the SIP attributes LiveKit sets, kind SIP); with `wait_until_answered` its request is
    answered when the test answers it, or failed as LiveKit fails it (a SIP status as Twirp
    code and `sip_status_code` metadata, the leg leaving the room as livekit/sip makes it
    leave). Webhooks (participant_joined/left, room_started/finished) are signed with the real
    library (`AccessToken.with_sha256`), bodies as protojson, handed to `deliver`; when the
    last participant other than agents leaves a room, the agents leave and the room finishes
    (its departure timeout taken as passed). Requests break no rule the tests know of when
    `problems` is empty."""

    def __init__(self, api_key: str, api_secret: str, *, sip_trunk_id: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.sip_trunk_id = sip_trunk_id
        self.verifier = TokenVerifier(api_key, api_secret)
        self.requests: list[tuple[str, Any]] = []
        """(method, request message) in the order they came, content types recorded apart."""
        self.content_types: list[str] = []
        self.problems: list[str] = []
        self.rooms: dict[str, FakeRoom] = {}
        self.dispatches: list[lk.AgentDispatch] = []
        self.legs: dict[str, FakeLeg] = {}
        """SIP participants by identity, as dialed (the latest for an identity)."""
        self.webhooks: list[tuple[lk.WebhookEvent, int | None]] = []
        """Webhooks sent and what `deliver` answered (None: not delivered)."""
        self.deliver: Deliver | None = None
        self.unreachable = False
        """Answer every API request 503, as a LiveKit that is down behind its proxy."""
        self.clock_offset = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[Route("/twirp/livekit.{service}/{method}", self._twirp, methods=["POST"])]
        )

    # --- what the tests do ----------------------------------------------------------------

    def of(self, method: str) -> list[Any]:
        return [message for name, message in self.requests if name == method]

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (its webhooks' `created_at`) on."""
        self.clock_offset += seconds

    def leg(self, to: str) -> FakeLeg:
        [found] = [leg for leg in self.legs.values() if leg.request.sip_call_to == to]
        return found

    def answer(self, to: str) -> None:
        self.leg(to).outcome.set_result("answer")

    def fail(self, to: str, sip_status: int) -> None:
        self.leg(to).outcome.set_result(sip_status)

    def time_out(self, to: str) -> None:
        """Its ring timeout passed with nobody answering."""
        self.leg(to).outcome.set_result("timeout")

    async def hang_up(self, to: str) -> None:
        """The callee hangs up an answered call (a BYE)."""
        leg = self.leg(to)
        leg.info.attributes["sip.callStatus"] = "hangup"
        await self._leave(
            leg.request.room_name, leg.info.identity, lk.DisconnectReason.CLIENT_INITIATED
        )

    async def join(self, room: str, token: str) -> str:
        """A browser joins `room` with a join token: it must be signed with our key and grant
        joining this very room. Answers the identity it joined as."""
        claims = self.verifier.verify(token)
        video = claims.video
        if video is None or not video.room_join or video.room != room:
            raise AssertionError(f"the token does not grant joining {room}: {video}")
        info = lk.ParticipantInfo(
            sid="PA_" + uuid.uuid4().hex[:12],
            identity=claims.identity,
            name=claims.name,
            state=lk.ParticipantInfo.ACTIVE,
            kind=lk.ParticipantInfo.STANDARD,
            joined_at=int(self._clock()),
        )
        await self._enter(room, info)
        return claims.identity

    async def leave(self, room: str, identity: str) -> None:
        await self._leave(room, identity, lk.DisconnectReason.CLIENT_INITIATED)

    def release(self) -> None:
        """Fail every dial still waiting (the server shuts down)."""
        for leg in self.legs.values():
            if not leg.outcome.done():
                leg.outcome.set_result("shutdown")

    # --- webhooks ---------------------------------------------------------------------------

    def _clock(self) -> float:
        return time.time() + self.clock_offset

    async def _webhook(
        self, name: str, room: FakeRoom, participant: lk.ParticipantInfo | None = None
    ) -> None:
        event = lk.WebhookEvent(
            event=name,
            room=room.info,
            id="EV_" + uuid.uuid4().hex[:12],
            created_at=int(self._clock()),
        )
        if participant is not None:
            event.participant.CopyFrom(participant)
        await self.send(event)

    async def send(self, event: lk.WebhookEvent, *, secret: str | None = None) -> int | None:
        """Send a webhook as LiveKit does (livekit/protocol webhook/url_notifier.go): the
        protojson body, and in Authorization a token of the API key, valid 5 minutes,
        carrying the body's base64 SHA-256."""
        body = json_format.MessageToJson(event, indent=None)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        token = (
            AccessToken(self.api_key, secret or self.api_secret)
            .with_ttl(timedelta(minutes=5))
            .with_sha256(digest)
            .to_jwt()
        )
        headers = {"Authorization": token, "Content-Type": "application/webhook+json"}
        status = await self.deliver(body, headers) if self.deliver is not None else None
        self.webhooks.append((event, status))
        return status

    # --- rooms and participants -------------------------------------------------------------

    async def _room(self, name: str) -> FakeRoom:
        """The room, created (as LiveKit auto-creates rooms) if there is none."""
        room = self.rooms.get(name)
        if room is None:
            room = FakeRoom(
                lk.Room(
                    sid="RM_" + uuid.uuid4().hex[:12],
                    name=name,
                    empty_timeout=300,
                    departure_timeout=20,
                    creation_time=int(self._clock()),
                )
            )
            self.rooms[name] = room
            await self._webhook("room_started", room)
        return room

    async def _enter(self, room_name: str, info: lk.ParticipantInfo) -> None:
        room = await self._room(room_name)
        room.participants[info.identity] = info
        room.info.num_participants = len(room.participants)
        await self._webhook("participant_joined", room, info)

    async def _leave(self, room_name: str, identity: str, reason: int) -> None:
        room = self.rooms.get(room_name)
        if room is None or identity not in room.participants:
            return
        info = room.participants.pop(identity)
        info.state = lk.ParticipantInfo.DISCONNECTED
        info.disconnect_reason = reason  # type: ignore[assignment]
        room.info.num_participants = len(room.participants)
        await self._webhook("participant_left", room, info)
        if reason == lk.DisconnectReason.ROOM_DELETED:
            return
        if all(p.kind == lk.ParticipantInfo.AGENT for p in room.participants.values()):
            for agent in list(room.participants):
                await self._leave(room_name, agent, lk.DisconnectReason.CLIENT_INITIATED)
            if room_name in self.rooms:
                del self.rooms[room_name]
                await self._webhook("room_finished", room)

    # --- the Twirp API ----------------------------------------------------------------------

    async def _twirp(self, request: Request) -> Response:
        if self.unreachable:
            return _twirp_error(TwirpFault("unavailable", "no healthy upstream"))
        key = (request.path_params["service"], request.path_params["method"])
        if key not in _METHODS:
            return _twirp_error(TwirpFault("bad_route", f"no handler for {request.url.path}"))
        message_class, handler = _METHODS[key]
        content_type = request.headers.get("content-type", "").split(";")[0]
        body = await request.body()
        try:
            if content_type == "application/protobuf":
                message = message_class.FromString(body)
            elif content_type == "application/json":
                message = json_format.Parse(body, message_class())
            else:
                self.problems.append(f"{key}: content type {content_type!r}")
                raise TwirpFault("bad_route", f"unexpected Content-Type: {content_type!r}")
            claims = self._authenticated(request)
            self.requests.append((key[1], message))
            self.content_types.append(content_type)
            result = await getattr(self, handler)(message, claims)
        except TwirpFault as fault:
            return _twirp_error(fault)
        except DecodeError as exc:
            return _twirp_error(TwirpFault("malformed", str(exc)))
        if content_type == "application/json":
            return Response(json_format.MessageToJson(result), media_type="application/json")
        return Response(result.SerializeToString(), media_type="application/protobuf")

    def _authenticated(self, request: Request) -> Claims:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise TwirpFault("unauthenticated", "no authorization")
        try:
            return self.verifier.verify(header.removeprefix("Bearer "))
        except Exception as exc:
            raise TwirpFault("unauthenticated", f"invalid token: {exc}") from exc

    @staticmethod
    def _grant(allowed: bool, what: str) -> None:
        if not allowed:
            raise TwirpFault("permission_denied", f"the token grants no {what}")

    def _room_admin(self, claims: Claims, room: str) -> None:
        video = claims.video
        self._grant(
            video is not None and bool(video.room_admin) and video.room == room,
            f"roomAdmin on {room!r}",
        )

    async def _create_room(self, message: lk.CreateRoomRequest, claims: Claims) -> lk.Room:
        self._grant(claims.video is not None and bool(claims.video.room_create), "roomCreate")
        if not message.name:
            raise TwirpFault("invalid_argument", "name is required")
        return (await self._room(message.name)).info

    async def _delete_room(self, message: lk.DeleteRoomRequest, claims: Claims) -> Any:
        self._grant(claims.video is not None and bool(claims.video.room_create), "roomCreate")
        room = self.rooms.pop(message.room, None)
        if room is None:
            raise TwirpFault("not_found", "room not found")
        for identity, info in list(room.participants.items()):
            leg = self.legs.get(identity)
            if leg is not None and not leg.outcome.done():
                leg.outcome.set_result("removed")
            room.participants.pop(identity)
            info.state = lk.ParticipantInfo.DISCONNECTED
            info.disconnect_reason = lk.DisconnectReason.ROOM_DELETED  # type: ignore[assignment]
            await self._webhook("participant_left", room, info)
        await self._webhook("room_finished", room)
        return lk.DeleteRoomResponse()

    async def _list_participants(
        self, message: lk.ListParticipantsRequest, claims: Claims
    ) -> lk.ListParticipantsResponse:
        self._room_admin(claims, message.room)
        room = self.rooms.get(message.room)
        if room is None:
            raise TwirpFault("not_found", "requested room does not exist")
        return lk.ListParticipantsResponse(participants=list(room.participants.values()))

    async def _remove_participant(self, message: lk.RoomParticipantIdentity, claims: Claims) -> Any:
        self._room_admin(claims, message.room)
        room = self.rooms.get(message.room)
        if room is None or message.identity not in room.participants:
            raise TwirpFault("not_found", "participant not found")
        leg = self.legs.get(message.identity)
        if leg is not None and not leg.outcome.done():
            # Still dialing: its dial fails, and the leg leaves as it does.
            leg.outcome.set_result("removed")
        else:
            await self._leave(
                message.room, message.identity, lk.DisconnectReason.PARTICIPANT_REMOVED
            )
        return lk.RemoveParticipantResponse()

    async def _dispatch(
        self, message: lk.CreateAgentDispatchRequest, claims: Claims
    ) -> lk.AgentDispatch:
        self._room_admin(claims, message.room)
        if not message.agent_name:
            self.problems.append("CreateDispatch without agent_name (explicit dispatch needs one)")
            raise TwirpFault("invalid_argument", "agent_name is required")
        dispatch = lk.AgentDispatch(
            id="AD_" + uuid.uuid4().hex[:12],
            agent_name=message.agent_name,
            room=message.room,
            metadata=message.metadata,
        )
        self.dispatches.append(dispatch)
        # A worker registered under that name takes the job and joins the room.
        await self._enter(
            message.room,
            lk.ParticipantInfo(
                sid="PA_" + uuid.uuid4().hex[:12],
                identity="agent-AJ_" + uuid.uuid4().hex[:12],
                state=lk.ParticipantInfo.ACTIVE,
                kind=lk.ParticipantInfo.AGENT,
                joined_at=int(self._clock()),
            ),
        )
        return dispatch

    async def _create_sip_participant(
        self, message: lk.CreateSIPParticipantRequest, claims: Claims
    ) -> lk.SIPParticipantInfo:
        self._grant(claims.sip is not None and bool(claims.sip.call), "sip.call")
        if message.sip_trunk_id != self.sip_trunk_id:
            raise TwirpFault("not_found", "requested sip trunk does not exist")
        problems = []
        for name in ("sip_call_to", "sip_number"):
            value = getattr(message, name)
            if not (value.startswith("+") and value[1:].isdigit()):
                problems.append(f"{name} must be E.164: {value!r}")
        if not message.room_name:
            problems.append("room_name is required")
        if problems:
            self.problems += problems
            raise TwirpFault("invalid_argument", "; ".join(problems))
        call_id = "SCL_" + uuid.uuid4().hex[:12]
        identity = message.participant_identity or "sip_" + message.sip_call_to
        info = lk.ParticipantInfo(
            sid="PA_" + uuid.uuid4().hex[:12],
            identity=identity,
            name=message.participant_name,
            state=lk.ParticipantInfo.ACTIVE,
            kind=lk.ParticipantInfo.SIP,
            joined_at=int(self._clock()),
            attributes={
                **message.participant_attributes,
                "sip.callID": call_id,
                "sip.trunkID": self.sip_trunk_id,
                "sip.phoneNumber": message.sip_call_to,
                "sip.trunkPhoneNumber": message.sip_number,
                "sip.callStatus": "dialing",
            },
        )
        leg = FakeLeg(message, info, asyncio.get_running_loop().create_future())
        self.legs[identity] = leg
        await self._enter(message.room_name, info)
        answer = lk.SIPParticipantInfo(
            participant_id=info.sid,
            participant_identity=identity,
            room_name=message.room_name,
            sip_call_id=call_id,
        )
        if not message.wait_until_answered:
            # LiveKit answers at once and dials on; outdial would never hear of the answer.
            self.problems.append("CreateSIPParticipant without wait_until_answered")
            task = asyncio.create_task(self._connect(leg))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return answer
        await self._connect(leg)
        return answer

    async def _connect(self, leg: FakeLeg) -> None:
        """Wait for what becomes of the leg's INVITE; raise its failure as LiveKit does."""
        ring = leg.request.ringing_timeout.seconds or 30
        try:
            outcome = await asyncio.wait_for(asyncio.shield(leg.outcome), ring)
        except TimeoutError:
            outcome = "timeout"
        room = leg.request.room_name
        identity = leg.info.identity
        if outcome == "answer":
            leg.info.attributes["sip.callStatus"] = "active"
            return
        if outcome == "timeout":
            await self._leave(room, identity, lk.DisconnectReason.USER_UNAVAILABLE)
            raise TwirpFault("canceled", "sip request timed out")
        if outcome in ("removed", "shutdown"):
            await self._leave(room, identity, lk.DisconnectReason.PARTICIPANT_REMOVED)
            raise TwirpFault("canceled", "call canceled")
        assert isinstance(outcome, int)
        await self._leave(room, identity, _sip_failure_disconnect(outcome))
        if outcome in _SIP_STATUS_TWIRP_CODE:
            code = _SIP_STATUS_TWIRP_CODE[outcome]
        else:
            code = "failed_precondition" if 500 <= outcome < 600 else "invalid_argument"
        raise TwirpFault(
            code,
            f"sip status {outcome}",
            {"sip_status_code": str(outcome), "sip_status": f"SIP {outcome}"},
        )


def _twirp_error(fault: TwirpFault) -> JSONResponse:
    body: dict[str, Any] = {"code": fault.code, "msg": fault.msg}
    if fault.meta:
        body["meta"] = fault.meta
    return JSONResponse(body, TWIRP_STATUS[fault.code])
