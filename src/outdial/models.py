"""Every table, imported once so that Alembic and the tests see the whole schema."""

from outdial.agents.models import Agent
from outdial.billing.models import LedgerEntry
from outdial.calls.models import Call, DialJob, Participant
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.db import Base
from outdial.dialer.models import CallerPacing, DialAttempt, DialerLease
from outdial.dnc.models import DncEntry
from outdial.idempotency import IdempotencyRecord
from outdial.keys.models import ApiKey
from outdial.numbers.models import PhoneNumber
from outdial.tenants.models import Tenant

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
    "IdempotencyRecord",
    "LedgerEntry",
    "Participant",
    "PhoneNumber",
    "Tenant",
    "metadata",
]
