"""The launch check (`GET /v1/campaigns/{id}/launch-check`): every reason a campaign would not
dial right now (blockers), and what would make its calls less than they could be (warnings).
`start` refuses while a blocker stands that is not merely a matter of time.

It answers in milliseconds whatever the list's size: every check is one indexed lookup or
aggregate, except the calling window's, which judges a bounded sample. The dialer reaches a
campaign's contacts in list order and stops queueing while 10,000 of them wait for their
window (`dialing.MAX_QUEUED_UNTIL_LATER`), so whatever it could dial right now is among
- the contacts it has queued already: their jobs' `run_at` says when each is next due (one
  index lookup for the earliest, `jobs.next_waiting_dials`), and
- the next contacts after those: the next `FIRST_LOOK`, and when none of them may be dialed
  now, the next `WINDOW_SAMPLE_CONTACTS` (one bounded range scan of the primary key), of
  which the pending ones not on the DNC list are grouped in SQL by contact `timezone` and
  number prefix (`+` and five digits: a NANP area code and one more digit, a country code
  and its leading area digits elsewhere), since numbers that share a prefix share their
  zones in libphonenumber's data almost always; one number of each group (at most
  `WINDOW_SAMPLE_GROUPS`) is judged with `dialer.windows.next_allowed_at`, the state rules
  included where the campaign keeps them on (a state's hours follow its area codes, which
  the prefix holds). A window in a fixed zone, without state rules, is judged once.
So a contact beyond the dialer's reach is never looked at, nor a number whose zones differ
from those of its group's representative (a few area codes split between two zones)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.agents.models import Agent
from outdial.billing import service as billing
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.campaigns.schemas import BlockerCode, CampaignSettings, WarningCode
from outdial.campaigns.statuses import CampaignStatus, ContactStatus, PausedReason
from outdial.dialer import jobs
from outdial.dialer.windows import next_allowed_at
from outdial.dnc.models import DncEntry
from outdial.errors import ValidationFailed
from outdial.numbers import service as numbers
from outdial.tenants.models import Tenant

FIRST_LOOK = 100
"""Contacts judged first: when one of them may be dialed now, no more are looked at."""
WINDOW_SAMPLE_CONTACTS = 10_000
"""As many contacts as the dialer queues ahead to wait for their windows."""
WINDOW_SAMPLE_GROUPS = 1_000
ZONE_PREFIX_LENGTH = 6
CARRIER_DEFAULT_CALLS_PER_SECOND = 1.0
"""Carriers allow 1-2 calls per second per caller ID unless the account is raised (API.md)."""


MATTERS_OF_TIME = frozenset({BlockerCode.OUTSIDE_CALLING_WINDOW, BlockerCode.RETRIES_NOT_DUE})
"""Blockers that lift by themselves at a known time (`until`): they never stop `start`."""


@dataclass(frozen=True, slots=True)
class Finding:
    code: BlockerCode | WarningCode
    message: str
    until: datetime | None = None
    """For a blocker that is a matter of time: when it lifts."""


@dataclass(slots=True)
class LaunchCheck:
    blockers: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.blockers

    @property
    def stopping_start(self) -> list[Finding]:
        """The blockers that are not merely a matter of time."""
        return [b for b in self.blockers if b.code not in MATTERS_OF_TIME]


async def check_launch(session: AsyncSession, *, campaign: Campaign, now: datetime) -> LaunchCheck:
    """Every blocker and warning of `campaign` at `now` (see the module's docstring)."""
    check = LaunchCheck()
    settings = CampaignSettings.model_validate(campaign.settings)
    tenant = await session.get(Tenant, campaign.tenant_id, populate_existing=True)
    assert tenant is not None
    agent = await session.get(Agent, campaign.agent_id, populate_existing=True)
    _check_state(check, campaign)
    _check_tenant(check, tenant)
    if agent is None or agent.deleted_at is not None:
        check.blockers.append(
            Finding(
                BlockerCode.AGENT_DELETED,
                f"Agent {campaign.agent_id} has been deleted: give the campaign another "
                "agent (PUT /v1/campaigns/{id} with agent_id).",
            )
        )
    elif agent.stream_url is None:
        check.warnings.append(
            Finding(
                WarningCode.AGENT_WITHOUT_STREAM_URL,
                f"Agent {agent.id} has no stream_url: answered calls are held silent (up to "
                "5 minutes) with nobody to speak to the person who answered.",
            )
        )
    await _check_caller_id(session, check, campaign)
    await _check_credit(session, check, campaign, agent)
    await _check_work(session, check, campaign, settings, now)
    _check_pace(check, settings, tenant)
    return check


def _check_state(check: LaunchCheck, campaign: Campaign) -> None:
    if campaign.status == CampaignStatus.COMPLETED:
        check.blockers.append(
            Finding(BlockerCode.CAMPAIGN_COMPLETED, "The campaign has completed: it dials no more.")
        )
    elif campaign.status == CampaignStatus.PAUSED:
        why = (
            " by itself: more than 3 % of the calls a person answered in the last 30 days "
            "were abandoned (see its abandonment figures)"
            if campaign.paused_reason == PausedReason.ABANDONMENT_RATE
            else ""
        )
        check.blockers.append(
            Finding(
                BlockerCode.CAMPAIGN_PAUSED,
                f"The campaign was paused{why}: resume it to dial.",
            )
        )


def _check_tenant(check: LaunchCheck, tenant: Tenant) -> None:
    if not tenant.is_active:
        check.blockers.append(
            Finding(
                BlockerCode.TENANT_INACTIVE, "The tenant is deactivated: nothing of it is dialed."
            )
        )
    if tenant.max_concurrency <= 0:
        check.blockers.append(
            Finding(
                BlockerCode.TENANT_CONCURRENCY_ZERO,
                "The tenant's concurrency cap is 0: no call of it may be live. The operator "
                "raises it with `outdial tenant update --max-concurrency N`.",
            )
        )


async def _check_caller_id(session: AsyncSession, check: LaunchCheck, campaign: Campaign) -> None:
    try:
        await numbers.require_owned(
            session, tenant_id=campaign.tenant_id, phone_numbers={campaign.call_from_number}
        )
    except ValidationFailed:
        check.blockers.append(
            Finding(
                BlockerCode.CALLER_ID_NOT_OWNED,
                f"The tenant no longer owns the caller ID {campaign.call_from_number}: register "
                "it again (POST /v1/numbers) or give the campaign a number it owns.",
            )
        )


async def _check_credit(
    session: AsyncSession, check: LaunchCheck, campaign: Campaign, agent: Agent | None
) -> None:
    """One call's first 30-second increment at the agent's rate must be available: a
    campaign call holds it at its first dial."""
    needed = billing.increment_cost_micros(agent.rate_per_minute_micros if agent else 0)
    available = await billing.available_micros(session, tenant_id=campaign.tenant_id)
    if available < needed:
        check.blockers.append(
            Finding(
                BlockerCode.INSUFFICIENT_CREDIT,
                f"{billing.from_micros(max(available, 0))} credits are available; one call "
                f"holds {billing.from_micros(needed)} (a 30-second increment at the agent's "
                "rate) when it is dialed. Add credits.",
            )
        )


async def _check_work(
    session: AsyncSession,
    check: LaunchCheck,
    campaign: Campaign,
    settings: CampaignSettings,
    now: datetime,
) -> None:
    """Whether anything is left to dial, and if so when the first of it may be dialed."""
    queued_due, retry_due = await jobs.next_waiting_dials(
        session, tenant_id=campaign.tenant_id, campaign_id=campaign.id
    )
    unqueued = await _has_unqueued_contacts(session, campaign)
    if queued_due is None and retry_due is None and not unqueued:
        check.blockers.append(
            Finding(
                BlockerCode.NO_PENDING_CONTACTS,
                "No contact is left to dial (none is pending, or every pending one is on the "
                "do-not-call list): add contacts.",
            )
        )
        return
    first_dials = [queued_due] if queued_due is not None else []
    if unqueued and not (queued_due is not None and queued_due <= now):
        first_dials += await _unqueued_openings(session, campaign, settings, now)
    upcoming = first_dials + ([retry_due] if retry_due is not None else [])
    if not upcoming:
        check.blockers.append(
            Finding(
                BlockerCode.CALLING_WINDOW_NEVER_OPENS,
                "No pending contact's calling window opens in the next 8 days (a number "
                "spanning zones whose windows never overlap?): widen the window.",
            )
        )
        return
    next_dial = min(upcoming)
    if next_dial <= now:
        return
    if first_dials:
        check.blockers.append(
            Finding(
                BlockerCode.OUTSIDE_CALLING_WINDOW,
                "Every pending contact is outside its calling window: the campaign dials "
                f"next at {_utc(next_dial)}.",
                until=next_dial,
            )
        )
    else:
        check.blockers.append(
            Finding(
                BlockerCode.RETRIES_NOT_DUE,
                f"Only retries are left, the first due at {_utc(next_dial)}.",
                until=next_dial,
            )
        )


def _listed(campaign: Campaign, phone_number: Any) -> ColumnElement[bool]:
    """On the tenant's DNC list (start and the dialer would skip it): one index lookup per
    contact. Spelt as a scalar subquery, which PostgreSQL runs per row, not as EXISTS, which
    it may turn into a hash of the tenant's whole list (a national registry's, say)."""
    return (
        select(literal_column("1"))
        .where(DncEntry.tenant_id == campaign.tenant_id, DncEntry.phone_number == phone_number)
        .limit(1)
        .scalar_subquery()
        .is_not(None)
    )


async def _has_unqueued_contacts(session: AsyncSession, campaign: Campaign) -> bool:
    """Whether a dialable contact follows those the dialer has queued: the first one found,
    which is the next contact unless a run of them are on the DNC list."""
    found = await session.scalar(
        select(CampaignContact.id)
        .where(
            CampaignContact.campaign_id == campaign.id,
            CampaignContact.id > campaign.queued_through,
            CampaignContact.status == ContactStatus.PENDING,
            ~_listed(campaign, CampaignContact.phone_number),
        )
        .order_by(CampaignContact.id)
        .limit(1)
    )
    return found is not None


async def _unqueued_openings(
    session: AsyncSession, campaign: Campaign, settings: CampaignSettings, now: datetime
) -> list[datetime]:
    """When the calling window (and, with `state_rules`, the state's hours) next opens for
    the contacts the dialer would queue next (those for which it does within 8 days): the
    next FIRST_LOOK contacts, and only if none of them may be dialed now, the next
    WINDOW_SAMPLE_CONTACTS."""
    window = settings.calling_window
    # The same for every number: a window in a fixed zone, without the states' hours.
    alike = window.timezone != "recipient" and not settings.state_rules
    openings: list[datetime] = []
    for reach in (FIRST_LOOK, WINDOW_SAMPLE_CONTACTS):
        sample = await _unqueued_sample(session, campaign, reach=reach, alike=alike)
        openings = [
            at
            for number, zone in sample
            if (
                at := next_allowed_at(
                    window,
                    number=number,
                    contact_timezone=zone,
                    now=now,
                    state_rules=settings.state_rules,
                )
            )
            is not None
        ]
        if any(at <= now for at in openings):
            break
    return openings


async def _unqueued_sample(
    session: AsyncSession, campaign: Campaign, *, reach: int, alike: bool
) -> list[tuple[str, str | None]]:
    """(number, contact timezone) for one contact of each zone group among the dialable
    ones of the next `reach` contacts after those queued (see the module's docstring); one
    contact only when every number is judged `alike`. The
    range is read in the primary key's order with no other condition, so it is one bounded
    index range scan whatever the planner thinks of the statuses beyond it."""
    upcoming = (
        select(
            CampaignContact.phone_number,
            CampaignContact.timezone,
            CampaignContact.status,
            _listed(campaign, CampaignContact.phone_number).label("listed"),
        )
        .where(
            CampaignContact.campaign_id == campaign.id,
            CampaignContact.id > campaign.queued_through,
        )
        .order_by(CampaignContact.id)
        .limit(reach)
        .subquery()
    )
    groups = (
        select(func.min(upcoming.c.phone_number), upcoming.c.timezone)
        .where(upcoming.c.status == ContactStatus.PENDING, ~upcoming.c.listed)
        .group_by(func.substr(upcoming.c.phone_number, 1, ZONE_PREFIX_LENGTH), upcoming.c.timezone)
        .limit(1 if alike else WINDOW_SAMPLE_GROUPS)
    )
    return [(number, zone) for number, zone in await session.execute(groups)]


def _check_pace(check: LaunchCheck, settings: CampaignSettings, tenant: Tenant) -> None:
    rate = min(settings.calls_per_second, tenant.calls_per_second)
    if rate > CARRIER_DEFAULT_CALLS_PER_SECOND:
        check.warnings.append(
            Finding(
                WarningCode.CALLS_PER_SECOND_ABOVE_CARRIER_DEFAULT,
                f"The caller ID is dialed at up to {rate:g} calls per second; carriers allow "
                "1-2 by default and may block or flag a number dialed faster. Make sure your "
                "carrier account allows this rate.",
            )
        )
    if settings.calls_per_second > tenant.calls_per_second:
        check.warnings.append(
            Finding(
                WarningCode.CALLS_PER_SECOND_ABOVE_TENANT_LIMIT,
                f"The campaign asks for {settings.calls_per_second:g} calls per second; the "
                f"tenant's limit of {tenant.calls_per_second:g} applies.",
            )
        )
    if 0 < tenant.max_concurrency < settings.max_concurrency:
        check.warnings.append(
            Finding(
                WarningCode.MAX_CONCURRENCY_ABOVE_TENANT_LIMIT,
                f"The campaign allows {settings.max_concurrency} calls at once; the tenant's "
                f"limit of {tenant.max_concurrency} (shared with its other work) applies.",
            )
        )


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
