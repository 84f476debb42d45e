"""Every table, imported once so that Alembic and the tests see the whole schema."""

from outdial.agents.models import Agent
from outdial.billing.models import LedgerEntry
from outdial.calls.models import Call, Participant
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.db import Base
from outdial.dialer.models import CallerPacing, DialAttempt, DialerLease, DialJob
from outdial.dnc.models import DncEntry, DncImport
from outdial.idempotency.models import IdempotencyRecord
from outdial.keys.models import ApiKey
from outdial.numbers.models import PhoneNumber
from outdial.ratelimit.models import RateCounter
from outdial.tenants.models import Tenant
from outdial.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

metadata = Base.metadata

__all__ = [
    "Agent",
    "ApiKey",
    "Call",
    "CallerPacing",
    "Campaign",
    "CampaignContact",
    "DialAttempt",
    "DialJob",
    "DialerLease",
    "DncEntry",
    "DncImport",
    "IdempotencyRecord",
    "LedgerEntry",
    "Participant",
    "PhoneNumber",
    "RateCounter",
    "Tenant",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
