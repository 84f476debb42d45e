"""LiveKit: every call is a room on a LiveKit server, which its PSTN participants are dialed
into by LiveKit's SIP service, its WebRTC participants join with the token outdial signs, and
its agent is sent to. Driven through the official `livekit-api` package (Twirp).

`place` creates the dial's room (RoomService.CreateRoom, which answers an existing room as it
is), sends the agent there when its `config.livekit_agent_name` names one
(AgentDispatchService.CreateDispatch, its metadata the call's `customParameters` as JSON,
`answered_by` "unknown": LiveKit has no machine detection), then dials the number into the
room (SIP.CreateSIPParticipant on the outbound trunk OUTDIAL_LIVEKIT_SIP_TRUNK_ID, the caller
ID as `sip_number`, the participant id as the LiveKit identity, the attempt id in the
participant's attributes, the ring timeout). That request waits for the answer
(`wait_until_answered`), so a task of the provider makes it: it reports `answered` when LiveKit
answers it, or `ended` with what the SIP status LiveKit fails it with means (486 busy, 603
rejected, 404 invalid number, a ring timeout no answer...).

Nothing is dialed before CreateSIPParticipant: a LiveKit that does not take CreateRoom or
CreateDispatch (unreachable, or refusing our key) never received the dial
(`CarrierUnreachable`). The end of an answered leg, and of any leg whose dialer is gone, is
reported by LiveKit's webhooks, which the API receives (`room_events`), signed by LiveKit with
the API key and secret (`livekit.api.WebhookReceiver` checks them). Hang-ups remove the leg
(RoomService.RemoveParticipant); lookups list the room's participants (ListParticipants) for
the leg and its SIP call status. LiveKit keeps no record of a participant that has left."""

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from google.protobuf.duration_pb2 import Duration
from livekit.api import (
    CreateAgentDispatchRequest,
    CreateRoomRequest,
    CreateSIPParticipantRequest,
    DeleteRoomRequest,
    DisconnectReason,
    ListParticipantsRequest,
    LiveKitAPI,
    ParticipantInfo,
    RoomParticipantIdentity,
    ServerError,
    SipCallError,
    WebhookEvent,
)

from outdial.telephony.base import (
    AttemptState,
    CallEvent,
    CarrierUnreachable,
    DialRequest,
    EndReason,
    EventSink,
    RoomEvent,
    TelephonyProvider,
)
from outdial.telephony.sip_call import outcome_of

log = logging.getLogger("outdial.telephony")

ATTEMPT_ATTRIBUTE = "outdial.attempt_id"
"""The participant attribute naming the attempt a SIP participant was dialed for."""
CALL_STATUS_ATTRIBUTE = "sip.callStatus"
"""LiveKit SIP's call status attribute: dialing, ringing, automation, active, hangup."""
ANSWERED_STATUSES = frozenset({"automation", "active", "hangup"})
"""Call statuses a leg reaches only once answered (LiveKit sets `hangup` on a BYE or an end
asked for; a call that never connected keeps `dialing` or `ringing`)."""
REMEMBERED = 100_000
"""Attempts whose leg (or known end) a process keeps in memory."""
API_TIMEOUT_SECONDS = 10.0

_UNANSWERED_BY_DISCONNECT: dict[int, EndReason] = {
    DisconnectReason.USER_UNAVAILABLE: "no_answer",
    DisconnectReason.USER_REJECTED: "rejected",
    DisconnectReason.SIP_TRUNK_FAILURE: "carrier_error",
    # Ended before the answer by us (a hang-up, the room deleted), as a cancel is elsewhere.
    DisconnectReason.PARTICIPANT_REMOVED: "no_answer",
    DisconnectReason.ROOM_DELETED: "no_answer",
    DisconnectReason.ROOM_CLOSED: "no_answer",
    DisconnectReason.CLIENT_INITIATED: "no_answer",
}
_STILL_THERE = frozenset({DisconnectReason.DUPLICATE_IDENTITY, DisconnectReason.MIGRATION})
"""A WebRTC participant `left` for these is still in the room (it joined again elsewhere)."""
_UNANSWERED_BY_CODE = frozenset({"canceled", "deadline_exceeded"})
"""Twirp codes a SIP dial fails with when nobody answered before its ring timeout."""


@dataclass(frozen=True, slots=True)
class Leg:
    """A PSTN participant dialed into a room; `call_id` is what `place` answers for it."""

    room: str
    identity: str

    @property
    def call_id(self) -> str:
        return f"{self.room}/{self.identity}"

    @classmethod
    def parse(cls, call_id: str) -> "Leg | None":
        room, slash, identity = call_id.partition("/")
        return cls(room, identity) if slash and room and identity else None


def _now() -> datetime:
    return datetime.now(UTC)


# --- webhooks to room events -------------------------------------------------------------------


def room_events(event: WebhookEvent) -> list[RoomEvent]:
    """What a (verified) LiveKit webhook tells of a call's room: a SIP leg we dialed or a
    WebRTC participant joined or left, or the room closed. Agents and everything else are
    nothing to us."""
    at = datetime.fromtimestamp(event.created_at, UTC) if event.created_at else _now()
    room = event.room.name
    if event.event == "room_finished":
        return [RoomEvent("closed", room, at)]
    if event.event not in ("participant_joined", "participant_left") or not room:
        return []
    kind = "joined" if event.event == "participant_joined" else "left"
    participant = event.participant
    if participant.kind == ParticipantInfo.Kind.SIP:
        attempt_id = participant.attributes.get(ATTEMPT_ATTRIBUTE)
        if not attempt_id or kind == "joined":
            # A leg joins while it is still dialing: its dialer reports the answer.
            return []
        return [
            RoomEvent(
                "left",
                room,
                at,
                identity=participant.identity,
                attempt_id=attempt_id,
                answered=participant.attributes.get(CALL_STATUS_ATTRIBUTE) in ANSWERED_STATUSES,
                end_reason=_UNANSWERED_BY_DISCONNECT.get(
                    participant.disconnect_reason, "carrier_error"
                ),
            )
        ]
    if participant.kind != ParticipantInfo.Kind.STANDARD:
        return []
    if kind == "left" and participant.disconnect_reason in _STILL_THERE:
        return []
    return [RoomEvent(kind, room, at, identity=participant.identity)]


def failure_reason(error: ServerError, *, hung_up: bool) -> EndReason:
    """Why a SIP dial LiveKit failed ended: its SIP status when it carries one; a ring
    timeout, or our own hang-up before the answer, is no answer; anything else a carrier
    error (a trunk or number LiveKit refused)."""
    status = error.sip_status_code if isinstance(error, SipCallError) else None
    if status is not None:
        return outcome_of(status, canceled=hung_up)
    if hung_up or error.code in _UNANSWERED_BY_CODE:
        return "no_answer"
    return "carrier_error"


# --- the provider ------------------------------------------------------------------------------


class LiveKitProvider(TelephonyProvider):
    name = "livekit"
    sees_webrtc = True

    def __init__(
        self,
        events: EventSink,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        sip_trunk_id: str,
    ) -> None:
        super().__init__(events)
        self.url = url
        self.api_key = api_key
        self.api_secret = api_secret
        self.sip_trunk_id = sip_trunk_id
        self._api: LiveKitAPI | None = None
        self._legs: OrderedDict[str, Leg] = OrderedDict()
        self._known: OrderedDict[str, AttemptState] = OrderedDict()
        """Attempts whose fate this process learnt from LiveKit's answer to a request."""
        self._dialing: dict[str, asyncio.Task[None]] = {}
        self._hung_up: set[str] = set()
        """Dialing attempts we asked to hang up before they were answered."""

    @property
    def api(self) -> LiveKitAPI:
        # Made on first use: an aiohttp session belongs to the running event loop.
        if self._api is None:
            self._api = LiveKitAPI(
                self.url,
                self.api_key,
                self.api_secret,
                timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS),
                failover=False,
            )
        return self._api

    async def place(self, request: DialRequest) -> str:
        """Create the room and dispatch the agent, then dial the leg into the room from a
        task of ours; answers the leg's id ("room/identity"). A LiveKit that takes neither
        request never received the dial."""
        room = request.room
        if room is None:
            raise ValueError("a livekit dial needs its room (DialRequest.room)")
        try:
            await self.api.room.create_room(CreateRoomRequest(name=room.room_name))
            if room.agent_name:
                await self.api.agent_dispatch.create_dispatch(
                    CreateAgentDispatchRequest(
                        agent_name=room.agent_name,
                        room=room.room_name,
                        metadata=json.dumps(room.custom_parameters("unknown")),
                    )
                )
        except (ServerError, aiohttp.ClientError, TimeoutError) as exc:
            self._remember(self._known, request.attempt_id, AttemptState("never_received"))
            raise CarrierUnreachable(f"livekit: {self.url}: {exc}") from exc
        leg = Leg(room.room_name, room.participant_id)
        self._remember(self._legs, request.attempt_id, leg)
        task = asyncio.create_task(self._dial(request, leg))
        self._dialing[request.attempt_id] = task
        task.add_done_callback(lambda _: self._dialing.pop(request.attempt_id, None))
        return leg.call_id

    async def _dial(self, request: DialRequest, leg: Leg) -> None:
        """Dial the leg and wait for LiveKit's answer: `answered`, or `ended` and why."""
        attempt_id = request.attempt_id
        try:
            await self.api.sip.create_sip_participant(
                CreateSIPParticipantRequest(
                    sip_trunk_id=self.sip_trunk_id,
                    sip_call_to=request.to,
                    sip_number=request.from_number,
                    room_name=leg.room,
                    participant_identity=leg.identity,
                    participant_attributes={ATTEMPT_ATTRIBUTE: attempt_id},
                    ringing_timeout=Duration(seconds=request.ring_timeout_seconds),
                    wait_until_answered=True,
                )
            )
        except ServerError as exc:
            if not isinstance(exc, SipCallError):
                # No SIP status: whether LiveKit set a call up is not told; leave none behind.
                await self._remove(leg, attempt_id)
            await self._ended(attempt_id, failure_reason(exc, hung_up=attempt_id in self._hung_up))
        except Exception as exc:
            # LiveKit's answer never came (no connection, a timeout, an unreadable response):
            # a leg we cannot follow is hung up, not left to run.
            log.warning("livekit: dialing %s got no answer from LiveKit: %r", attempt_id, exc)
            await self._remove(leg, attempt_id)
            await self._ended(attempt_id, "carrier_error")
        else:
            await self.events(CallEvent(attempt_id, "answered", _now()))
        finally:
            self._hung_up.discard(attempt_id)

    async def _ended(self, attempt_id: str, reason: EndReason) -> None:
        event = CallEvent(attempt_id, "ended", _now(), reason)
        self._remember(self._known, attempt_id, AttemptState("ended", end=event))
        await self.events(event)

    async def hangup(self, attempt_id: str, *, provider_call_id: str | None = None) -> None:
        """Remove the leg from its room (LiveKit then hangs its call up); a leg still ringing
        ends `no_answer`, as a canceled call does. Failures are logged, not raised."""
        leg = (Leg.parse(provider_call_id) if provider_call_id else None) or self._legs.get(
            attempt_id
        )
        if leg is None:
            return
        if attempt_id in self._dialing:
            self._hung_up.add(attempt_id)
        await self._remove(leg, attempt_id)

    async def _remove(self, leg: Leg, attempt_id: str) -> None:
        try:
            await self.api.room.remove_participant(
                RoomParticipantIdentity(room=leg.room, identity=leg.identity)
            )
        except ServerError as exc:
            if exc.status != 404:  # already gone
                log.warning("livekit: hanging up %s (%s) failed: %s", attempt_id, leg.call_id, exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("livekit: hanging up %s (%s) failed: %r", attempt_id, leg.call_id, exc)

    async def lookup(self, attempt_id: str, *, provider_call_id: str | None = None) -> AttemptState:
        """Live while this process waits for its answer or while the leg is in its room (by
        its identity and attempt attribute); what LiveKit's answer to our requests told, if
        this process heard it; otherwise unknown: LiveKit forgets a leg once it has left."""
        known = self._known.get(attempt_id)
        if known is not None:
            return known
        if attempt_id in self._dialing:
            return AttemptState("live")
        leg = (Leg.parse(provider_call_id) if provider_call_id else None) or self._legs.get(
            attempt_id
        )
        if leg is None:
            return AttemptState("unknown")
        for participant in await self._participants(leg.room):
            if (
                participant.identity == leg.identity
                and participant.attributes.get(ATTEMPT_ATTRIBUTE) == attempt_id
            ):
                return AttemptState("live")
        return AttemptState("unknown")

    async def _participants(self, room: str) -> list[ParticipantInfo]:
        try:
            listed = await self.api.room.list_participants(ListParticipantsRequest(room=room))
        except ServerError as exc:
            if exc.status == 404:  # the room is gone, and everyone with it
                return []
            raise
        return list(listed.participants)

    async def aclose(self) -> None:
        """Stop waiting for dials' answers and close the HTTP session. Their legs go on in
        LiveKit: their ends reach the API as webhooks."""
        tasks = list(self._dialing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._api is not None:
            await self._api.aclose()

    @staticmethod
    def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
        memory[key] = value
        while len(memory) > REMEMBERED:
            memory.popitem(last=False)


async def delete_room(*, url: str, api_key: str, api_secret: str, room: str) -> None:
    """Delete a room: LiveKit disconnects everyone in it (legs, WebRTC participants, agents)
    and reports each as having left. A room already gone is no error; other failures are
    logged, not raised."""
    async with LiveKitAPI(
        url,
        api_key,
        api_secret,
        timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS),
        failover=False,
    ) as api:
        try:
            await api.room.delete_room(DeleteRoomRequest(room=room))
        except ServerError as exc:
            if exc.status != 404:
                log.warning("livekit: deleting room %s failed: %s", room, exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("livekit: deleting room %s failed: %r", room, exc)
