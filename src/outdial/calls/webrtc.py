"""A call's room: where its WebRTC participants join with the token outdial signs, and where a
provider whose calls are rooms (livekit) dials its PSTN participants and sends its agent."""

from datetime import timedelta

from outdial.config import Settings

ROOM_PREFIX = "call_"


def room_name(call_id: str) -> str:
    """The call's room (the contract's `room_name`: "call_" + the call id)."""
    return ROOM_PREFIX + call_id


def leg_room_name(*, call_id: str, kind: str, participant_id: str) -> str:
    """The room a PSTN participant is dialed into: its call's room, where everyone on the call
    meets; except for a batch, which fans out, each recipient in a room of its own (named
    after its participant), so recipients never hear one another."""
    if kind == "batch":
        return ROOM_PREFIX + participant_id
    return room_name(call_id)


def call_of_room(room: str) -> str | None:
    """The id of the call whose room this is, if its name is one `room_name` makes."""
    call_id = room.removeprefix(ROOM_PREFIX)
    return call_id if call_id != room and call_id.startswith(ROOM_PREFIX) else None


def join_token(settings: Settings, *, room_name: str, identity: str, name: str | None) -> str:
    """A LiveKit-compatible access token that lets one participant join the call's room."""
    # Imported here: livekit-api (with aiohttp and protobuf) is ~0.4 s of start-up that every
    # process importing calls would pay, for the one request that signs a token.
    from livekit.api import AccessToken, VideoGrants

    token = (
        AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_ttl(timedelta(seconds=settings.webrtc_token_ttl_seconds))
        .with_grants(VideoGrants(room_join=True, room=room_name))
    )
    if name:
        token = token.with_name(name)
    return token.to_jwt()
