"""Pick the telephony provider the configuration names.

A provider's module is imported only by a process that uses it: their client libraries
(livekit-api with aiohttp and protobuf, httpx) would otherwise cost every process, the CLI's
too, a large part of its start-up."""

import importlib

from outdial.config import Settings
from outdial.telephony.base import EventSink, TelephonyProvider

PROVIDERS: dict[str, str] = {
    "simulated": "outdial.telephony.simulated:SimulatedProvider",
    "sip": "outdial.telephony.sip:SipProvider",
    "plivo": "outdial.telephony.plivo:PlivoProvider",
    "twilio": "outdial.telephony.twilio:TwilioProvider",
    "livekit": "outdial.telephony.livekit:LiveKitProvider",
}
"""OUTDIAL_TELEPHONY_PROVIDER's values, each with its provider class ("module:Class")."""


def provider_class(settings: Settings) -> type[TelephonyProvider]:
    """The class of the provider the configuration names: what it can do (`sees_webrtc`)
    is known to every process, the API's too, without building one."""
    module, _, name = PROVIDERS[settings.telephony_provider].partition(":")
    provider: type[TelephonyProvider] = getattr(importlib.import_module(module), name)
    return provider


def create_provider(settings: Settings, events: EventSink) -> TelephonyProvider:
    """The provider named by OUTDIAL_TELEPHONY_PROVIDER, wired to the dialer's event sink."""
    if settings.telephony_provider == "simulated":
        from outdial.telephony.simulated import SimulatedProvider

        return SimulatedProvider(
            events, speed=settings.simulated_speed, cdr_path=settings.simulated_cdr
        )
    # Settings refuses sip, plivo, twilio or livekit without what each needs.
    if settings.telephony_provider == "sip":
        from outdial.telephony.sip import SipProvider, Trunk

        assert settings.sip_trunk
        return SipProvider(
            events,
            trunk=Trunk.parse(settings.sip_trunk),
            username=settings.sip_username,
            password=settings.sip_password,
            bind_host=settings.sip_bind_host,
            bind_port=settings.sip_bind_port,
        )
    if settings.telephony_provider == "plivo":
        from outdial.telephony.plivo import PlivoProvider

        assert settings.plivo_auth_id and settings.plivo_auth_token and settings.public_url
        return PlivoProvider(
            events,
            auth_id=settings.plivo_auth_id,
            auth_token=settings.plivo_auth_token.get_secret_value(),
            api_url=settings.plivo_api_url,
            public_url=settings.public_url,
        )
    if settings.telephony_provider == "livekit":
        from outdial.telephony.livekit import LiveKitProvider

        assert settings.livekit_sip_trunk_id
        return LiveKitProvider(
            events,
            url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            sip_trunk_id=settings.livekit_sip_trunk_id,
        )
    from outdial.telephony.twilio import TwilioProvider

    assert settings.telephony_provider == "twilio"
    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.public_url
    return TwilioProvider(
        events,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        api_url=settings.twilio_api_url,
        public_url=settings.public_url,
    )


async def close_call_room(settings: Settings, room: str) -> None:
    """End a call's room, disconnecting everyone in it, where the provider puts calls in
    rooms (livekit); other providers have none."""
    if settings.telephony_provider == "livekit":
        from outdial.telephony import livekit

        await livekit.delete_room(
            url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            room=room,
        )
