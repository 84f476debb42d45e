"""Pick the telephony provider the configuration names."""

from outdial.config import Settings
from outdial.errors import OutdialError
from outdial.telephony.base import EventSink, TelephonyProvider
from outdial.telephony.plivo import PlivoProvider
from outdial.telephony.simulated import SimulatedProvider
from outdial.telephony.sip import SipProvider, Trunk
from outdial.telephony.twilio import TwilioProvider


class ProviderUnavailable(OutdialError):
    status_code = 503
    code = "provider_unavailable"


def create_provider(settings: Settings, events: EventSink) -> TelephonyProvider:
    """The provider named by OUTDIAL_TELEPHONY_PROVIDER, wired to the dialer's event sink."""
    if settings.telephony_provider == "simulated":
        return SimulatedProvider(
            events, speed=settings.simulated_speed, cdr_path=settings.simulated_cdr
        )
    if settings.telephony_provider == "sip":
        return _sip_provider(settings, events)
    # Settings refuses plivo or twilio without their credentials and public URL.
    if settings.telephony_provider == "plivo":
        assert settings.plivo_auth_id and settings.plivo_auth_token and settings.public_url
        return PlivoProvider(
            events,
            auth_id=settings.plivo_auth_id,
            auth_token=settings.plivo_auth_token.get_secret_value(),
            api_url=settings.plivo_api_url,
            public_url=settings.public_url,
        )
    if settings.telephony_provider == "twilio":
        assert settings.twilio_account_sid and settings.twilio_auth_token and settings.public_url
        return TwilioProvider(
            events,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            api_url=settings.twilio_api_url,
            public_url=settings.public_url,
        )
    raise ProviderUnavailable(
        f"The {settings.telephony_provider!r} provider is not available in this build yet; "
        "use OUTDIAL_TELEPHONY_PROVIDER=simulated."
    )


def _sip_provider(settings: Settings, events: EventSink) -> SipProvider:
    if not settings.sip_trunk:
        raise ValueError(
            "OUTDIAL_TELEPHONY_PROVIDER=sip needs OUTDIAL_SIP_TRUNK (sip:host:port of the trunk)"
        )
    return SipProvider(
        events,
        trunk=Trunk.parse(settings.sip_trunk),
        username=settings.sip_username,
        password=settings.sip_password,
        bind_host=settings.sip_bind_host,
        bind_port=settings.sip_bind_port,
    )
