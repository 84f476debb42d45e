"""The livekit provider against a LOCAL FAKE LiveKit (tests/telephony/fakes.py: its Twirp
server API and its webhooks, written from livekit/protocol), over real HTTP on loopback —
never a real LiveKit server. The provider drives it with the official `livekit-api` client,
whose tokens the fake checks; the fake's webhooks are signed with the same library and the API
checks them with its WebhookReceiver. End to end on SQLite and PostgreSQL: calls created
through the API, dialed by a running dialer, their rooms' participants joining and leaving."""

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from google.protobuf import json_format
from livekit.api import (
    AccessToken,
    CreateRoomRequest,
    DisconnectReason,
    ParticipantInfo,
    Room,
    ServerError,
    SipCallError,
    VideoGrants,
    WebhookEvent,
)
from sqlalchemy import select, update

from outdial.app import create_app
from outdial.config import Settings
from outdial.dialer.models import DialAttempt, DialerLease
from outdial.dialer.worker import Dialer
from outdial.telephony import livekit
from outdial.telephony.base import CallEvent, CarrierUnreachable, DialRequest, RoomTarget
from outdial.telephony.livekit import LiveKitProvider, room_events
from outdial.webhooks.models import WebhookDelivery
from tests.conftest import create_agent, error_code, register_number
from tests.dialer.conftest import dialer_running, wait_until
from tests.telephony.conftest import (
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    LIVEKIT_TRUNK,
    livekit_settings,
)
from tests.telephony.fakes import FakeLiveKit, serving

WEBHOOK = "/v1/telephony/livekit/webhook"
CALLER = "+15559990000"
ALICE = "+15559990001"
BOB = "+15559990002"
FINAL = ("completed", "failed", "canceled")


class Switchboard:
    """One fake LiveKit server for the module, its URL fixed for the API's settings; each
    test gets a fresh fake behind it."""

    def __init__(self) -> None:
        self.fake: FakeLiveKit | None = None
        self.url = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.fake is not None, "no fake LiveKit for this test"
        await self.fake.app(scope, receive, send)


@pytest.fixture(scope="module")
async def livekit_server() -> AsyncIterator[Switchboard]:
    board = Switchboard()
    async with serving(board) as url:
        board.url = url
        yield board


@pytest.fixture(scope="module")
async def app(database_url: str, livekit_server: Switchboard) -> AsyncIterator[FastAPI]:
    """The API with LiveKit as its telephony provider (its webhooks accepted)."""
    application = create_app(livekit_settings(database_url, livekit_server.url))
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def fake(livekit_server: Switchboard) -> AsyncIterator[FakeLiveKit]:
    livekit = FakeLiveKit(LIVEKIT_KEY, LIVEKIT_SECRET, sip_trunk_id=LIVEKIT_TRUNK)
    livekit_server.fake = livekit
    yield livekit
    livekit.release()
    await asyncio.sleep(0)


def wire(fake: FakeLiveKit, client: httpx.AsyncClient) -> None:
    """Deliver the fake's webhooks to the API."""

    async def deliver(body: str, headers: dict[str, str]) -> int:
        return (await client.post(WEBHOOK, content=body, headers=headers)).status_code

    fake.deliver = deliver


@asynccontextmanager
async def dialer_through(
    app: FastAPI, database_url: str, url: str, **overrides: Any
) -> AsyncIterator[Any]:
    settings = livekit_settings(
        database_url, url, dialer_poll_seconds=0.02, dialer_lease_seconds=1.5, **overrides
    )
    async with dialer_running(app, settings) as dialer:
        yield dialer


async def participants(client, tenant, call_id) -> dict[str, dict[str, Any]]:
    call = (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()
    return {p["identity"]: p for p in call["participants"]}


async def call_status(client, tenant, call_id) -> str:
    return (await client.get(f"/v1/calls/{call_id}", headers=tenant.headers)).json()["status"]


def status_is(client, tenant, call_id, identity, *statuses):
    async def check() -> bool:
        return (await participants(client, tenant, call_id))[identity]["status"] in statuses

    return check


def dialed(fake: FakeLiveKit, count: int):
    async def check() -> bool:
        return len(fake.legs) >= count

    return check


async def livekit_agent(client, tenant) -> dict[str, Any]:
    await register_number(client, tenant, CALLER)
    return await create_agent(client, tenant, config={"livekit_agent_name": "ava-agent"})


def outcome(found: dict[str, Any]) -> tuple[Any, ...]:
    return (found["status"], found["end_reason"])


# --- the provider against the fake ---------------------------------------------------------------


class Heard:
    """An event sink that keeps what the provider reports."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    async def __call__(self, event: CallEvent) -> None:
        self.events.append(event)

    async def of(self, attempt_id: str) -> CallEvent:
        await wait_until(self._has(attempt_id), within=5, every=0.01)
        return [e for e in self.events if e.attempt_id == attempt_id][-1]

    def _has(self, attempt_id: str):
        async def check() -> bool:
            return any(e.attempt_id == attempt_id for e in self.events)

        return check


@pytest.fixture
async def heard() -> Heard:
    return Heard()


def provider_for(url: str, events: Heard, *, secret: str = LIVEKIT_SECRET) -> LiveKitProvider:
    return LiveKitProvider(
        events, url=url, api_key=LIVEKIT_KEY, api_secret=secret, sip_trunk_id=LIVEKIT_TRUNK
    )


@pytest.fixture
async def provider(livekit_server, fake, heard) -> AsyncIterator[LiveKitProvider]:
    carrier = provider_for(livekit_server.url, heard)
    yield carrier
    fake.release()
    await carrier.aclose()


def dial(attempt_id: str = "att_1", to: str = ALICE, **room: Any) -> DialRequest:
    target = RoomTarget(
        room_name=room.pop("room_name", "call_call_1"),
        agent_name=room.pop("agent_name", "ava-agent"),
        call_id="call_1",
        participant_id=room.pop("participant_id", "participant_1"),
        attempt_id=attempt_id,
        agent_id="0193f0c2-0000-7000-8000-000000000001",
        to=to,
        from_number=CALLER,
        batch_id="batch_1",
        variables={"name": "Zoë", "plan": "gold"},
    )
    return DialRequest(
        attempt_id=attempt_id, to=to, from_number=CALLER, ring_timeout_seconds=20, room=target
    )


async def test_place_creates_the_room_sends_the_agent_and_dials_the_leg(
    provider, fake, heard
) -> None:
    request = dial()
    call_id = await provider.place(request)
    assert call_id == "call_call_1/participant_1"
    await wait_until(dialed(fake, 1), within=5)
    assert fake.problems == []
    # the official client speaks protobuf, every request signed with our key (the fake
    # checked each token and its grants)
    assert set(fake.content_types) == {"application/protobuf"}
    assert [name for name, _ in fake.requests] == [
        "CreateRoom",
        "CreateDispatch",
        "CreateSIPParticipant",
    ]
    [room] = fake.of("CreateRoom")
    assert room.name == "call_call_1"
    [dispatch] = fake.of("CreateDispatch")
    assert (dispatch.agent_name, dispatch.room) == ("ava-agent", "call_call_1")
    # the agent is told what a media stream's start.customParameters tell
    assert request.room is not None
    assert json.loads(dispatch.metadata) == request.room.custom_parameters("unknown")
    assert json.loads(json.loads(dispatch.metadata)["variables"]) == {"name": "Zoë", "plan": "gold"}
    [sip] = fake.of("CreateSIPParticipant")
    assert (sip.sip_trunk_id, sip.sip_call_to, sip.sip_number) == (LIVEKIT_TRUNK, ALICE, CALLER)
    assert (sip.room_name, sip.participant_identity) == ("call_call_1", "participant_1")
    assert dict(sip.participant_attributes) == {"outdial.attempt_id": "att_1"}
    assert sip.ringing_timeout.seconds == 20
    assert sip.wait_until_answered

    assert heard.events == []  # ringing
    fake.answer(ALICE)
    answered = await heard.of("att_1")
    assert (answered.kind, answered.machine) == ("answered", False)


async def test_an_agent_without_a_livekit_name_is_not_dispatched(provider, fake, heard) -> None:
    await provider.place(dial(agent_name=None))
    await wait_until(dialed(fake, 1), within=5)
    assert fake.of("CreateDispatch") == []
    assert [name for name, _ in fake.requests] == ["CreateRoom", "CreateSIPParticipant"]


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        (486, "busy"),
        (600, "busy"),
        (603, "rejected"),
        (404, "invalid_number"),
        (480, "no_answer"),
        (408, "no_answer"),
        (503, "carrier_error"),
        ("timeout", "no_answer"),
    ],
)
async def test_a_failed_dial_ends_for_its_sip_status(provider, fake, heard, what, reason) -> None:
    await provider.place(dial())
    await wait_until(dialed(fake, 1), within=5)
    if what == "timeout":
        fake.time_out(ALICE)
    else:
        fake.fail(ALICE, what)
    ended = await heard.of("att_1")
    assert (ended.kind, ended.end_reason) == ("ended", reason)
    state = await provider.lookup("att_1")
    assert (state.status, state.end) == ("ended", ended)
    # the leg left its room (and the agent with it: nobody else was there)
    left = [e.participant.kind for e, _ in fake.webhooks if e.event == "participant_left"]
    assert left == [ParticipantInfo.SIP, ParticipantInfo.AGENT]


async def test_hang_ups_remove_the_leg(provider, fake, heard, livekit_server) -> None:
    # ringing: the dial is canceled, which ends it as no answer
    await provider.place(dial())
    await wait_until(dialed(fake, 1), within=5)
    await provider.hangup("att_1")
    ended = await heard.of("att_1")
    assert (ended.kind, ended.end_reason) == ("ended", "no_answer")
    # (and again once its dial failed without a SIP status: nothing may be left behind)
    removed = {(r.room, r.identity) for r in fake.of("RemoveParticipant")}
    assert removed == {("call_call_1", "participant_1")}

    # answered, hung up by another process that knows only the stored id
    call_id = await provider.place(dial("att_2", BOB, participant_id="participant_2"))
    await wait_until(dialed(fake, 2), within=5)
    fake.answer(BOB)
    assert (await heard.of("att_2")).kind == "answered"
    other = provider_for(livekit_server.url, Heard())
    await other.hangup("att_2", provider_call_id=call_id)
    await other.aclose()
    [left] = [
        e.participant
        for e, _ in fake.webhooks
        if e.event == "participant_left" and e.participant.identity == "participant_2"
    ]
    assert left.disconnect_reason == DisconnectReason.PARTICIPANT_REMOVED
    # gone already, or never known: nothing to do, nothing raised
    await provider.hangup("att_2")
    before = len(fake.requests)
    await provider.hangup("att_unknown")
    assert len(fake.requests) == before
    assert fake.problems == []


async def test_lookup_asks_the_room_for_the_leg(provider, fake, heard, livekit_server) -> None:
    call_id = await provider.place(dial())
    await wait_until(dialed(fake, 1), within=5)
    assert (await provider.lookup("att_1")).status == "live"  # still waiting for the answer
    fake.answer(ALICE)
    await heard.of("att_1")
    # another process knows only the stored id: it lists the room's participants
    other = provider_for(livekit_server.url, Heard())
    try:
        assert (await other.lookup("att_1", provider_call_id=call_id)).status == "live"
        # the identity is in the room, but for another attempt (a retry): not this one
        assert (await other.lookup("att_0", provider_call_id=call_id)).status == "unknown"
        await fake.hang_up(ALICE)
        # LiveKit keeps no record of a leg that left, nor of a room that finished
        assert (await other.lookup("att_1", provider_call_id=call_id)).status == "unknown"
        assert (await other.lookup("att_9")).status == "unknown"
    finally:
        await other.aclose()
    assert [name for name, _ in fake.requests].count("ListParticipants") == 3


async def test_a_livekit_that_takes_nothing_never_received_the_dial(
    provider, fake, heard, livekit_server
) -> None:
    fake.unreachable = True
    with pytest.raises(CarrierUnreachable, match=r"503|unavailable"):
        await provider.place(dial())
    assert (await provider.lookup("att_1")).status == "never_received"
    fake.unreachable = False

    wrong = provider_for(livekit_server.url, heard, secret="not-the-secret-" * 3)
    with pytest.raises(CarrierUnreachable, match="unauthenticated"):
        await wrong.place(dial("att_2"))
    await wrong.aclose()

    closed = provider_for("http://127.0.0.1:9", heard)  # nothing listens on the discard port
    with pytest.raises(CarrierUnreachable):
        await closed.place(dial("att_3"))
    await closed.aclose()
    assert fake.legs == {}  # nobody was dialed
    assert heard.events == []


async def test_the_fake_checks_tokens_and_grants_and_speaks_json(fake, livekit_server) -> None:
    url = f"{livekit_server.url}/twirp/livekit.RoomService/CreateRoom"
    body = json_format.MessageToJson(CreateRoomRequest(name="call_call_x"))

    def bearer(grants: VideoGrants, secret: str = LIVEKIT_SECRET) -> dict[str, str]:
        token = AccessToken(LIVEKIT_KEY, secret).with_grants(grants).to_jwt()
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async with httpx.AsyncClient() as http:
        made = await http.post(url, content=body, headers=bearer(VideoGrants(room_create=True)))
        assert made.status_code == 200, made.text
        assert json_format.Parse(made.text, Room()).name == "call_call_x"
        forged = await http.post(
            url, content=body, headers=bearer(VideoGrants(room_create=True), "guessed-" * 4)
        )
        assert (forged.status_code, forged.json()["code"]) == (401, "unauthenticated")
        ungranted = await http.post(url, content=body, headers=bearer(VideoGrants(room_list=True)))
        assert (ungranted.status_code, ungranted.json()["code"]) == (403, "permission_denied")
        unknown = await http.post(
            f"{livekit_server.url}/twirp/livekit.RoomService/Nope",
            content=body,
            headers=bearer(VideoGrants(room_create=True)),
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "bad_route")


# --- webhooks as room events ----------------------------------------------------------------------


def webhook(name: str, room: str = "call_call_1", **participant: Any) -> WebhookEvent:
    event = WebhookEvent(event=name, room=Room(name=room), id="EV_1", created_at=1_800_000_000)
    if participant:
        event.participant.CopyFrom(ParticipantInfo(**participant))
    return event


AT = datetime.fromtimestamp(1_800_000_000, UTC)
SIP = ParticipantInfo.SIP
LEG = {"identity": "participant_1", "kind": SIP}


@pytest.mark.parametrize(
    ("status", "disconnect", "answered", "reason"),
    [
        ("active", DisconnectReason.PARTICIPANT_REMOVED, True, "no_answer"),
        ("hangup", DisconnectReason.CLIENT_INITIATED, True, "no_answer"),
        ("ringing", DisconnectReason.USER_UNAVAILABLE, False, "no_answer"),
        ("ringing", DisconnectReason.USER_REJECTED, False, "rejected"),
        ("dialing", DisconnectReason.SIP_TRUNK_FAILURE, False, "carrier_error"),
        ("dialing", DisconnectReason.ROOM_DELETED, False, "no_answer"),
        ("dialing", DisconnectReason.MEDIA_FAILURE, False, "carrier_error"),
    ],
)
def test_a_leg_leaving_is_an_event_of_its_attempt(status, disconnect, answered, reason) -> None:
    attributes = {"outdial.attempt_id": "att_1", "sip.callStatus": status}
    [event] = room_events(
        webhook("participant_left", **LEG, attributes=attributes, disconnect_reason=disconnect)
    )
    assert (event.kind, event.room, event.at, event.attempt_id) == (
        "left",
        "call_call_1",
        AT,
        "att_1",
    )
    assert (event.answered, event.end_reason) == (answered, reason)


def test_what_is_not_an_event_of_ours() -> None:
    ours = {"outdial.attempt_id": "att_1", "sip.callStatus": "dialing"}
    ignored = [
        webhook("participant_joined", **LEG, attributes=ours),  # a leg joins as it dials
        webhook("participant_left", **LEG),  # a SIP participant we never dialed
        webhook("participant_joined", identity="agent-AJ_1", kind=ParticipantInfo.AGENT),
        webhook("participant_left", identity="agent-AJ_1", kind=ParticipantInfo.AGENT),
        # joined again from another tab: still there
        webhook(
            "participant_left",
            identity="operator-7",
            disconnect_reason=DisconnectReason.DUPLICATE_IDENTITY,
        ),
        webhook("track_published", identity="operator-7"),
        webhook("room_started"),
    ]
    for event in ignored:
        assert room_events(event) == [], event


def test_webrtc_participants_and_rooms() -> None:
    [joined] = room_events(webhook("participant_joined", identity="operator-7"))
    [left] = room_events(
        webhook(
            "participant_left",
            identity="operator-7",
            disconnect_reason=DisconnectReason.CLIENT_INITIATED,
        )
    )
    [closed] = room_events(webhook("room_finished"))
    assert [(e.kind, e.identity, e.attempt_id) for e in (joined, left, closed)] == [
        ("joined", "operator-7", None),
        ("left", "operator-7", None),
        ("closed", None, None),
    ]


def test_failure_reasons() -> None:
    def sip(code: str, status: int | None = None) -> ServerError:
        meta = {"sip_status_code": str(status)} if status else None
        error = ServerError(code, "x", status=400, metadata=meta)
        return SipCallError.from_server_error(error) if status else error

    assert livekit.failure_reason(sip("resource_exhausted", 486), hung_up=False) == "busy"
    assert livekit.failure_reason(sip("aborted", 487), hung_up=True) == "no_answer"
    assert livekit.failure_reason(sip("canceled"), hung_up=False) == "no_answer"
    assert livekit.failure_reason(sip("not_found"), hung_up=True) == "no_answer"
    # a trunk or number LiveKit refused
    assert livekit.failure_reason(sip("not_found"), hung_up=False) == "carrier_error"
    assert livekit.failure_reason(sip("invalid_argument"), hung_up=False) == "carrier_error"


def test_settings_need_a_trunk_and_a_real_secret() -> None:
    with pytest.raises(ValueError, match="OUTDIAL_LIVEKIT_SIP_TRUNK_ID"):
        Settings(telephony_provider="livekit", livekit_api_secret=LIVEKIT_SECRET)
    with pytest.raises(ValueError, match="OUTDIAL_LIVEKIT_API_SECRET"):
        Settings(telephony_provider="livekit", livekit_sip_trunk_id=LIVEKIT_TRUNK)
    assert Settings(
        telephony_provider="livekit",
        livekit_sip_trunk_id=LIVEKIT_TRUNK,
        livekit_api_secret=LIVEKIT_SECRET,
    ).livekit_sip_trunk_id == (LIVEKIT_TRUNK)


# --- end to end: calls through the API, a dialer, the fake LiveKit and its webhooks ---------------


async def test_a_mixed_call_completes_when_its_last_participant_leaves(
    client, app, database_url, tenant, livekit_server, fake, monkeypatch
) -> None:
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    # outdial's own webhooks: every participant's moves, the WebRTC one's too, are events
    monkeypatch.setattr(app.state.settings, "webhook_allow_private_urls", True)
    subscribed = await client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]},
        headers=tenant.headers,
    )
    assert subscribed.status_code == 201, subscribed.text
    queued = await client.post(
        "/v1/calls",
        json={
            "agent_id": agent["id"],
            "participants": [
                {"transport": "pstn", "identity": ALICE, "metadata": {"name": "Alice"}},
                {"transport": "pstn", "identity": BOB},
                {"transport": "webrtc", "identity": "operator-7", "name": "Olivia"},
            ],
            "variables": {"campaign": "spring-offer"},
            "ring_timeout_seconds": 20,
        },
        headers=tenant.headers,
    )
    assert queued.status_code == 202, queued.text
    call = queued.json()
    call_id, room = call["id"], call["room_name"]
    ids = {p["identity"]: p["id"] for p in call["participants"]}
    [token] = [p["token"] for p in call["participants"] if p["transport"] == "webrtc"]

    async with dialer_through(app, database_url, livekit_server.url) as dialer:
        await wait_until(dialed(fake, 2))
        assert fake.problems == []
        # one room, the call's, which both legs join as their participants
        assert {r.name for r in fake.of("CreateRoom")} == {room}
        legs = {m.sip_call_to: m for m in fake.of("CreateSIPParticipant")}
        for number in (ALICE, BOB):
            leg = legs[number]
            assert (leg.room_name, leg.participant_identity) == (room, ids[number])
            assert (leg.sip_number, leg.sip_trunk_id) == (CALLER, LIVEKIT_TRUNK)
            assert leg.ringing_timeout.seconds == 20
        # an agent for each leg, told of the call and of its participant
        told = {json.loads(d.metadata)["to"]: json.loads(d.metadata) for d in fake.dispatches}
        assert {d.agent_name for d in fake.dispatches} == {"ava-agent"}
        alice = told[ALICE]
        assert json.loads(alice.pop("variables")) == {"campaign": "spring-offer", "name": "Alice"}
        assert alice == {
            "call_id": call_id,
            "participant_id": ids[ALICE],
            "attempt_id": legs[ALICE].participant_attributes["outdial.attempt_id"],
            "agent_id": agent["id"],
            "to": ALICE,
            "from": CALLER,
            "answered_by": "unknown",
        }

        # the browser user joins with the token outdial signed
        assert await fake.join(room, token) == "operator-7"
        await wait_until(status_is(client, tenant, call_id, "operator-7", "in_progress"))
        assert await call_status(client, tenant, call_id) == "in_progress"

        fake.answer(ALICE)
        await wait_until(status_is(client, tenant, call_id, ALICE, "in_progress"))
        fake.fail(BOB, 486)
        await wait_until(status_is(client, tenant, call_id, BOB, *FINAL))
        fake.advance(42)
        await fake.hang_up(ALICE)
        await wait_until(status_is(client, tenant, call_id, ALICE, *FINAL))
        assert await call_status(client, tenant, call_id) == "in_progress"  # Olivia is there
        fake.advance(18)
        await fake.leave(room, "operator-7")
        await wait_until(status_is(client, tenant, call_id, "operator-7", *FINAL))
        assert await call_status(client, tenant, call_id) == "completed"
        await wait_until(lambda: _no_live_calls(dialer), within=5)

    found = await participants(client, tenant, call_id)
    assert {identity: outcome(p) for identity, p in found.items()} == {
        ALICE: ("completed", "answered"),
        BOB: ("failed", "busy"),  # the SIP status of the dial, not the webhook's coarser word
        "operator-7": ("completed", "answered"),
    }
    # 42 s of the fake's time, plus the test's own, less a fraction (the webhook's time has
    # whole seconds): billed as two 30 s increments
    assert 41 <= found[ALICE]["duration_seconds"] <= 44
    assert found[ALICE]["cost"] == 0.1
    assert (found[BOB]["duration_seconds"], found[BOB]["cost"]) == (None, 0)
    assert 60 <= found["operator-7"]["duration_seconds"] <= 64
    assert found["operator-7"]["cost"] == 0
    events = await _events_of(app, call_id)
    moves = [
        (e["data"]["identity"], e["data"]["status"])
        for e in events
        if e["type"] == "call.participant.updated"
    ]
    assert [status for who, status in moves if who == "operator-7"] == ["in_progress", "completed"]
    assert [status for who, status in moves if who == ALICE][-2:] == ["in_progress", "completed"]
    assert [e["type"] for e in events].count("call.completed") == 1
    # every webhook was taken (agents joining and leaving, the room finishing: 204 too)
    assert {status for _, status in fake.webhooks} == {204}
    assert {e.event for e, _ in fake.webhooks} >= {
        "participant_joined",
        "participant_left",
        "room_finished",
    }


async def test_forged_webhooks_are_403_and_change_nothing(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(client, tenant, agent, [("webrtc", "operator-7")])
    before = await participants(client, tenant, call["id"])
    left = webhook(
        "participant_left",
        room=call["room_name"],
        identity="operator-7",
        disconnect_reason=DisconnectReason.CLIENT_INITIATED,
    )
    body = json_format.MessageToJson(left, indent=None)
    signed = await _signed(body)
    forgeries = {
        "unsigned": (body, {}),
        "wrong secret": (body, await _signed(body, secret="guessed-secret-" * 3)),
        "tampered": (body.replace("operator-7", "operator-8"), signed),
        "other body": (json_format.MessageToJson(webhook("room_finished")), signed),
        "expired": (body, await _signed(body, ttl=timedelta(seconds=-120))),
        "not a token": (body, {"Authorization": "Bearer nonsense"}),
    }
    for what, (content, headers) in forgeries.items():
        response = await client.post(WEBHOOK, content=content, headers=headers)
        assert response.status_code == 403, what
        assert error_code(response) == "invalid_signature", what
    assert await participants(client, tenant, call["id"]) == before
    # the real one counts (the fake signs as LiveKit does)
    assert await fake.send(left) == 204
    found = await participants(client, tenant, call["id"])
    assert outcome(found["operator-7"]) == ("completed", "answered")


@pytest.mark.one_backend
async def test_webhooks_are_refused_where_livekit_is_not_the_provider(database_url) -> None:
    bare = create_app(Settings(database_url=database_url))
    async with LifespanManager(bare):
        transport = httpx.ASGITransport(app=bare)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as plain:
            body = json_format.MessageToJson(webhook("room_finished"))
            response = await plain.post(WEBHOOK, content=body, headers=await _signed(body))
    assert response.status_code == 403
    assert error_code(response) == "callbacks_not_configured"


async def test_ending_a_call_deletes_its_room(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(
        client, tenant, agent, [("pstn", ALICE), ("webrtc", "operator-7"), ("webrtc", "late")]
    )
    call_id, room = call["id"], call["room_name"]
    [token] = [p["token"] for p in call["participants"] if p["identity"] == "operator-7"]
    async with dialer_through(app, database_url, livekit_server.url):
        await wait_until(dialed(fake, 1))
        fake.answer(ALICE)
        await fake.join(room, token)
        await wait_until(status_is(client, tenant, call_id, ALICE, "in_progress"))
        await wait_until(status_is(client, tenant, call_id, "operator-7", "in_progress"))

        ended = await client.post(f"/v1/calls/{call_id}/end", headers=tenant.headers)
        assert ended.status_code == 200, ended.text
        [deleted] = fake.of("DeleteRoom")
        assert deleted.room == room
        await wait_until(lambda: _all_final(client, tenant, call_id))
    found = await participants(client, tenant, call_id)
    assert {identity: outcome(p) for identity, p in found.items()} == {
        ALICE: ("completed", "answered"),
        "operator-7": ("completed", "answered"),
        "late": ("canceled", "canceled"),  # never came: canceled by the end
    }
    assert await call_status(client, tenant, call_id) == "canceled"
    assert room not in fake.rooms
    assert fake.problems == []


async def test_a_leg_ringing_when_the_call_is_ended_is_hung_up(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    """Not answered yet: the room's deletion cancels its dial."""
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(client, tenant, agent, [("pstn", ALICE)])
    async with dialer_through(app, database_url, livekit_server.url):
        await wait_until(dialed(fake, 1))
        ended = await client.post(f"/v1/calls/{call['id']}/end", headers=tenant.headers)
        assert ended.status_code == 200
        await wait_until(lambda: _all_final(client, tenant, call["id"]))
    found = await participants(client, tenant, call["id"])
    # canceled before anyone answered: no answer, as a canceled dial is with every carrier
    assert outcome(found[ALICE]) == ("failed", "no_answer")
    assert [d.room for d in fake.of("DeleteRoom")] == [call["room_name"]]
    assert len(fake.of("CreateSIPParticipant")) == 1


async def test_a_dialer_shutting_down_hangs_up_its_legs(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    """Past its grace period a stopping dialer hangs up what it still has live: the leg is
    removed from its room, which LiveKit reports as the leg leaving."""
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(client, tenant, agent, [("pstn", ALICE)])
    async with dialer_through(
        app, database_url, livekit_server.url, dialer_shutdown_grace_seconds=0
    ):
        await wait_until(dialed(fake, 1))
        fake.answer(ALICE)
        await wait_until(status_is(client, tenant, call["id"], ALICE, "in_progress"))
    [removed] = fake.of("RemoveParticipant")
    assert (removed.room, removed.identity) == (call["room_name"], call["participants"][0]["id"])
    await wait_until(status_is(client, tenant, call["id"], ALICE, *FINAL))
    assert outcome((await participants(client, tenant, call["id"]))[ALICE]) == (
        "completed",
        "answered",
    )


async def test_a_webrtc_only_call(client, app, database_url, tenant, fake) -> None:
    """No dial at all: the browser users' comings and goings complete the call; one who never
    came fails no_answer once the room has closed."""
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(client, tenant, agent, [("webrtc", "ann"), ("webrtc", "bo")])
    assert call["status"] == "in_progress"
    [token] = [p["token"] for p in call["participants"] if p["identity"] == "ann"]
    await fake.join(call["room_name"], token)
    assert outcome((await participants(client, tenant, call["id"]))["ann"]) == (
        "in_progress",
        None,
    )
    fake.advance(5)
    await fake.leave(call["room_name"], "ann")  # the last one there: the room finishes
    found = await participants(client, tenant, call["id"])
    assert outcome(found["ann"]) == ("completed", "answered")
    assert 5 <= found["ann"]["duration_seconds"] <= 7
    assert outcome(found["bo"]) == ("failed", "no_answer")
    assert await call_status(client, tenant, call["id"]) == "completed"


async def test_a_batch_fans_out_one_room_per_recipient(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    queued = await client.post(
        "/v1/calls/batch",
        json={"agent_id": agent["id"], "to": [ALICE, BOB]},
        headers=tenant.headers,
    )
    assert queued.status_code == 202
    call_id = queued.json()["id"]
    ids = {p["identity"]: p["id"] for p in queued.json()["participants"]}
    async with dialer_through(app, database_url, livekit_server.url):
        await wait_until(dialed(fake, 2))
        legs = {m.sip_call_to: m for m in fake.of("CreateSIPParticipant")}
        # recipients of a batch never hear one another
        assert {n: legs[n].room_name for n in (ALICE, BOB)} == {
            ALICE: "call_" + ids[ALICE],
            BOB: "call_" + ids[BOB],
        }
        for number in (ALICE, BOB):
            fake.time_out(number)
        await wait_until(lambda: _all_final(client, tenant, call_id))
    found = await participants(client, tenant, call_id)
    assert {n: outcome(p) for n, p in found.items()} == {
        ALICE: ("failed", "no_answer"),
        BOB: ("failed", "no_answer"),
    }


async def test_a_number_put_on_the_dnc_list_is_not_dialed(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    """The same dialer path as every provider: the DNC re-check right before the dial."""
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(client, tenant, agent, [("pstn", ALICE)])
    listed = await client.post("/v1/dnc", json={"phone_number": ALICE}, headers=tenant.headers)
    assert listed.status_code in (200, 201), listed.text
    async with dialer_through(app, database_url, livekit_server.url):
        await wait_until(lambda: _all_final(client, tenant, call["id"]))
    assert outcome((await participants(client, tenant, call["id"]))[ALICE]) == ("failed", "dnc")
    assert fake.requests == []


# --- reconciliation: what became of legs whose dialer died ----------------------------------------


async def test_a_leg_whose_dialer_died_is_settled_by_its_webhook(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    """The placing dialer dies while its legs ring: a leg's unanswered end, which that dialer
    would have heard, is taken from LiveKit's webhook once its lease has lapsed; a leg
    answered meanwhile is found live by the dialer that takes its job over (it asks LiveKit),
    and ends with its webhook."""
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(client, tenant, agent, [("pstn", ALICE), ("pstn", BOB)])
    settings = livekit_settings(database_url, livekit_server.url, dialer_lease_seconds=1.5)
    dying = Dialer(app.state.sessionmaker, settings)
    parts = [asyncio.create_task(dying.writer.run()), asyncio.create_task(dying.placer.run())]
    assert await dying.claim_round() == 2
    await wait_until(dialed(fake, 2))
    await wait_until(lambda: _placed(app, call["id"], 2))
    # It dies: nothing of it runs any more, and its lease lapses.
    for part in parts:
        part.cancel()
    await asyncio.gather(*parts, return_exceptions=True)
    await dying.provider.aclose()
    await _expire_leases(app)

    fake.answer(ALICE)  # nobody hears it
    fake.fail(BOB, 486)
    await wait_until(status_is(client, tenant, call["id"], BOB, *FINAL))

    survivor = Dialer(app.state.sessionmaker, settings)
    try:
        assert await survivor.reconcile_expired() == 1  # Alice's job; Bob's has ended
        assert (await participants(client, tenant, call["id"]))[ALICE]["status"] == "dialing"
        assert fake.of("ListParticipants")  # it asked LiveKit: the leg is in its room
        await fake.hang_up(ALICE)
        await wait_until(status_is(client, tenant, call["id"], ALICE, *FINAL))
    finally:
        await survivor.provider.aclose()
    found = await participants(client, tenant, call["id"])
    # Bob: the webhook's word for a 486 (LiveKit's USER_REJECTED); Alice: answered, though
    # when was not heard, so no talk time
    assert outcome(found[BOB]) == ("failed", "rejected")
    assert outcome(found[ALICE]) == ("completed", "answered")
    assert found[ALICE]["duration_seconds"] == 0
    assert len(fake.of("CreateSIPParticipant")) == 2  # nobody dialed twice


async def test_a_leg_gone_without_a_word_ends_lost(
    client, app, database_url, tenant, livekit_server, fake
) -> None:
    """Its webhook never reached us, and LiveKit keeps no record of a leg that left: the
    attempt ends lost, never dialed again."""
    wire(fake, client)
    agent = await livekit_agent(client, tenant)
    call = await _direct_call(client, tenant, agent, [("pstn", ALICE)])
    async with dialer_through(app, database_url, livekit_server.url) as dialer:
        await wait_until(dialed(fake, 1))
        fake.answer(ALICE)
        await wait_until(status_is(client, tenant, call["id"], ALICE, "in_progress"))
        fake.deliver = None  # webhooks lost
        await fake.hang_up(ALICE)
        [attempt] = (await _attempts(app, call["id"])).values()
        await dialer.reconciler.reconcile([attempt.id])
        await wait_until(status_is(client, tenant, call["id"], ALICE, *FINAL))
    assert outcome((await participants(client, tenant, call["id"]))[ALICE]) == (
        "failed",
        "lost",
    )
    assert len(fake.of("CreateSIPParticipant")) == 1


# --- helpers -------------------------------------------------------------------------------------


async def _direct_call(client, tenant, agent, people: list[tuple[str, str]]) -> dict[str, Any]:
    response = await client.post(
        "/v1/calls",
        json={
            "agent_id": agent["id"],
            "participants": [{"transport": t, "identity": i} for t, i in people],
        },
        headers=tenant.headers,
    )
    assert response.status_code in (201, 202), response.text
    return response.json()


async def _signed(
    body: str, *, secret: str = LIVEKIT_SECRET, ttl: timedelta = timedelta(minutes=5)
) -> dict[str, str]:
    """An Authorization header as LiveKit signs its webhooks, with the real library."""
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = AccessToken(LIVEKIT_KEY, secret).with_ttl(ttl).with_sha256(digest).to_jwt()
    return {"Authorization": token, "Content-Type": "application/webhook+json"}


async def _all_final(client, tenant, call_id) -> bool:
    found = await participants(client, tenant, call_id)
    return all(p["status"] in FINAL for p in found.values())


async def _no_live_calls(dialer) -> bool:
    return not dialer.live


async def _attempts(app: FastAPI, call_id: str) -> dict[str, DialAttempt]:
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(select(DialAttempt).where(DialAttempt.call_id == call_id))
        return {a.to_number: a for a in rows}


async def _events_of(app: FastAPI, call_id: str) -> list[dict[str, Any]]:
    """The bodies of the webhook events written for a call, in order."""
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(
            select(WebhookDelivery.payload)
            .where(WebhookDelivery.ordering_key == call_id)
            .order_by(WebhookDelivery.seq)
        )
        return [json.loads(payload) for payload in rows]


async def _placed(app: FastAPI, call_id: str, count: int) -> bool:
    attempts = await _attempts(app, call_id)
    return sum(a.provider_call_id is not None for a in attempts.values()) >= count


async def _expire_leases(app: FastAPI) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(DialerLease).values(lease_expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
