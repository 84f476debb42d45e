"""The dashboard's reads that the domain services do not offer: the live snapshot (one
statement per tenant per second, whatever the number of viewers) and a call's timeline."""

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, cast, func, literal, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from outdial.calls import service as calls
from outdial.calls.models import Call, Participant
from outdial.campaigns.models import Campaign, CampaignContact
from outdial.campaigns.schemas import CONTACT_STATUSES
from outdial.db import UTCDateTime
from outdial.dialer.models import DialAttempt, DialJob
from outdial.keys.models import ApiKey

RECENT_CAMPAIGNS = 10
RECENT_CALLS = 15
QUEUE_STATES = ("waiting", "active", "completed", "failed")
FINAL_CONTACT_STATUSES = ("completed", "failed", "skipped_dnc")


@dataclass
class CampaignRow:
    id: str
    name: str
    status: str
    created_at: datetime | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONTACT_STATUSES, 0))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def percent(self) -> int:
        """Final contacts over all contacts, as the API's `progress`, in whole percent."""
        final = sum(self.counts[s] for s in FINAL_CONTACT_STATUSES)
        return int(final * 100 // self.total) if self.total else 0


@dataclass
class CallRow:
    id: str
    status: str
    source: str | None
    created_at: datetime | None


@dataclass
class Snapshot:
    queue: dict[str, int]
    campaigns: list[CampaignRow]
    calls: list[CallRow]
    live_keys: set[str]
    """Which of the viewers' key digests still exist (a deleted key's pages stop updating)."""


def _row(
    kind: str,
    *,
    id: Any = None,
    name: Any = None,
    status: Any = None,
    n: Any = None,
    at: Any = None,
) -> list[Any]:
    """One member of the snapshot's UNION ALL: every member has these six typed columns."""
    return [
        literal(kind, String).label("kind"),
        (id if id is not None else cast(null(), String)).label("id"),
        (name if name is not None else cast(null(), String)).label("name"),
        (status if status is not None else cast(null(), String)).label("status"),
        (n if n is not None else cast(literal(0), BigInteger)).label("n"),
        (at if at is not None else cast(null(), UTCDateTime)).label("at"),
    ]


def snapshot_statement(
    tenant_id: str, *, known_final: Collection[str], key_digests: Collection[str]
) -> Select[Any]:
    """Queue counts, the recent campaigns with their contacts per status (except campaigns whose
    final counts the caller already holds), the recent calls and which viewer keys still exist:
    one statement, so one round trip and one consistent view."""
    recent = (
        select(Campaign.id, Campaign.name, Campaign.status, Campaign.created_at)
        .where(Campaign.tenant_id == tenant_id, Campaign.deleted_at.is_(None))
        .order_by(Campaign.id.desc())
        .limit(RECENT_CAMPAIGNS)
        .subquery()
    )
    counted = select(recent.c.id)
    if known_final:
        counted = counted.where(recent.c.id.not_in(list(known_final)))
    recent_calls = (
        select(Call.id, Call.status, func.coalesce(Call.campaign_id, Call.batch_id).label("src"))
        .add_columns(Call.created_at)
        .where(Call.tenant_id == tenant_id)
        .order_by(Call.id.desc())
        .limit(RECENT_CALLS)
        .subquery()
    )
    members = [
        select(
            *_row(
                "campaign",
                id=recent.c.id,
                name=recent.c.name,
                status=recent.c.status,
                at=recent.c.created_at,
            )
        ),
        select(*_row("queue", status=DialJob.status, n=func.count()))
        .where(DialJob.tenant_id == tenant_id)
        .group_by(DialJob.status),
        select(
            *_row(
                "contacts",
                id=CampaignContact.campaign_id,
                status=CampaignContact.status,
                n=func.count(),
            )
        )
        .where(CampaignContact.campaign_id.in_(counted))
        .group_by(CampaignContact.campaign_id, CampaignContact.status),
        select(
            *_row(
                "call",
                id=recent_calls.c.id,
                name=recent_calls.c.src,
                status=recent_calls.c.status,
                at=recent_calls.c.created_at,
            )
        ),
    ]
    if key_digests:
        members.append(
            select(*_row("key", id=ApiKey.digest)).where(
                ApiKey.digest.in_(list(key_digests)), ApiKey.tenant_id == tenant_id
            )
        )
    return union_all(*members)  # type: ignore[return-value]


async def load_snapshot(
    session: AsyncSession,
    *,
    tenant_id: str,
    final_counts: dict[str, dict[str, int]],
    key_digests: Collection[str],
) -> Snapshot:
    """Read the tenant's snapshot in one statement. `final_counts` holds the contact counts of
    completed campaigns (they never change again): it is read and filled in here."""
    stmt = snapshot_statement(tenant_id, known_final=final_counts.keys(), key_digests=key_digests)
    queue = dict.fromkeys(QUEUE_STATES, 0)
    campaigns: dict[str, CampaignRow] = {}
    counts: dict[str, dict[str, int]] = {}
    calls_: list[CallRow] = []
    live_keys: set[str] = set()
    for kind, id_, name, status, n, at in (await session.execute(stmt)).all():
        if kind == "queue":
            queue[status] = n
        elif kind == "campaign":
            campaigns[id_] = CampaignRow(id=id_, name=name, status=status, created_at=at)
        elif kind == "contacts":
            counts.setdefault(id_, dict.fromkeys(CONTACT_STATUSES, 0))[status] = n
        elif kind == "call":
            calls_.append(CallRow(id=id_, status=status, source=name, created_at=at))
        elif kind == "key":
            live_keys.add(id_)
    for campaign in campaigns.values():
        if campaign.id in final_counts:
            campaign.counts = dict(final_counts[campaign.id])
            continue
        campaign.counts.update(counts.get(campaign.id, {}))
        if campaign.status == "completed":  # read in the same statement: these are final
            final_counts[campaign.id] = dict(campaign.counts)
    ordered = sorted(campaigns.values(), key=lambda c: c.id, reverse=True)
    calls_.sort(key=lambda c: c.id, reverse=True)
    return Snapshot(queue=queue, campaigns=ordered, calls=calls_, live_keys=live_keys)


# --- a call's timeline -----------------------------------------------------------------------


@dataclass
class TimelineEntry:
    at: datetime | None
    kind: str
    """`attempt`, `participant`, or whatever a registered source adds (`delivery` …)."""
    title: str
    detail: str = ""


TimelineSource = Callable[[AsyncSession, str, str], Awaitable[Sequence[TimelineEntry]]]
_timeline_sources: list[TimelineSource] = []


def register_timeline_source(source: TimelineSource) -> None:
    """Add entries to every call's timeline: `source(session, tenant_id, call_id)` answers
    them (wiring.py registers the webhook deliveries'). Registering one twice adds it once."""
    if source not in _timeline_sources:
        _timeline_sources.append(source)


@dataclass
class CallTimeline:
    call: Call
    participants: list[Participant]
    entries: list[TimelineEntry]


async def call_timeline(session: AsyncSession, *, tenant_id: str, call_id: str) -> CallTimeline:
    """A call, its participants and what happened to it in time order: each dial attempt
    (placed, answered, ended and why) and the entries of registered sources."""
    call = await calls.get_call(session, tenant_id=tenant_id, call_id=call_id)
    participants = await calls.participants_of(session, call_id=call.id)
    attempts = (
        await session.scalars(
            select(DialAttempt)
            .where(DialAttempt.call_id == call.id, DialAttempt.tenant_id == tenant_id)
            .order_by(DialAttempt.created_at)
        )
    ).all()
    entries = [TimelineEntry(call.created_at, "call", "queued", call.kind)]
    for a in attempts:
        who = f"{a.to_number} from {a.from_number} via {a.provider}, attempt {a.attempt_no}"
        entries.append(TimelineEntry(a.created_at, "attempt", "dial committed", who))
        if a.placed_at:
            entries.append(TimelineEntry(a.placed_at, "attempt", "placed", a.to_number))
        if a.answered_at:
            by = f" by a {a.answered_by}" if a.answered_by else ""
            entries.append(TimelineEntry(a.answered_at, "attempt", f"answered{by}", a.to_number))
        if a.ended_at:
            talk = f", talked {a.talk_seconds} s" if a.talk_seconds else ""
            title = f"ended: {a.end_reason or a.status}"
            entries.append(TimelineEntry(a.ended_at, "attempt", title, f"{a.to_number}{talk}"))
    for source in _timeline_sources:
        entries.extend(await source(session, tenant_id, call.id))
    if call.ended_at:
        entries.append(TimelineEntry(call.ended_at, "call", f"call {call.status}"))
    entries.sort(key=lambda e: (e.at is None, e.at))
    return CallTimeline(call=call, participants=participants, entries=entries)
