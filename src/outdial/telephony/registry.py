"""Pick the telephony provider the configuration names."""

from outdial.config import Settings
from outdial.errors import OutdialError
from outdial.telephony.base import EventSink, TelephonyProvider
from outdial.telephony.simulated import SimulatedProvider


class ProviderUnavailable(OutdialError):
    status_code = 503
    code = "provider_unavailable"


def create_provider(settings: Settings, events: EventSink) -> TelephonyProvider:
    """The provider named by OUTDIAL_TELEPHONY_PROVIDER, wired to the dialer's event sink."""
    if settings.telephony_provider == "simulated":
        return SimulatedProvider(
            events, speed=settings.simulated_speed, cdr_path=settings.simulated_cdr
        )
    raise ProviderUnavailable(
        f"The {settings.telephony_provider!r} provider is not available in this build yet; "
        "use OUTDIAL_TELEPHONY_PROVIDER=simulated."
    )
