"""Plugs the domains into the engine at startup: campaigns feed the dialer through the
interface the dialer defines (dialer/sources.py), so the dialer never imports them; webhook
deliveries join a call's dashboard timeline through the dashboard's hook."""

from outdial.campaigns.dialing import CampaignSource
from outdial.dashboard.service import register_timeline_source
from outdial.dialer import sources
from outdial.webhooks.timeline import call_deliveries


def plug_all() -> None:
    """Plug every domain in; idempotent. Called by the app and by `outdial dialer`."""
    sources.plug(CampaignSource())
    register_timeline_source(call_deliveries)
