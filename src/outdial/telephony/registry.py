"""Pick the telephony provider the configuration names."""

from outdial.config import Settings
from outdial.telephony.base import EventSink, TelephonyProvider
from outdial.telephony.plivo import PlivoProvider
from outdial.telephony.simulated import SimulatedProvider
from outdial.telephony.sip import SipProvider, Trunk
from outdial.telephony.twilio import TwilioProvider


def create_provider(settings: Settings, events: EventSink) -> TelephonyProvider:
    """The provider named by OUTDIAL_TELEPHONY_PROVIDER, wired to the dialer's event sink."""
    if settings.telephony_provider == "simulated":
        return SimulatedProvider(
            events, speed=settings.simulated_speed, cdr_path=settings.simulated_cdr
        )
    # Settings refuses sip, plivo or twilio without what each needs.
    if settings.telephony_provider == "sip":
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
        assert settings.plivo_auth_id and settings.plivo_auth_token and settings.public_url
        return PlivoProvider(
            events,
            auth_id=settings.plivo_auth_id,
            auth_token=settings.plivo_auth_token.get_secret_value(),
            api_url=settings.plivo_api_url,
            public_url=settings.public_url,
        )
    assert settings.telephony_provider == "twilio"
    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.public_url
    return TwilioProvider(
        events,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        api_url=settings.twilio_api_url,
        public_url=settings.public_url,
    )
