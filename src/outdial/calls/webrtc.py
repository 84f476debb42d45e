from datetime import timedelta

from livekit.api import AccessToken, VideoGrants

from outdial.config import Settings


def join_token(settings: Settings, *, room_name: str, identity: str, name: str | None) -> str:
    """A LiveKit-compatible access token that lets one participant join the call's room."""
    token = (
        AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_ttl(timedelta(seconds=settings.webrtc_token_ttl_seconds))
        .with_grants(VideoGrants(room_join=True, room=room_name))
    )
    if name:
        token = token.with_name(name)
    return token.to_jwt()
