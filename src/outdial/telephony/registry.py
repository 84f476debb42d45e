"""Pick the telephony provider the configuration names."""

from outdial.config import Settings
from outdial.errors import OutdialError
from outdial.telephony.base import EventSink, TelephonyProvider
from outdial.telephony.simulated import SimulatedProvider
from outdial.telephony.sip import SipProvider, Trunk


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
