"""The interface through which work other than queued calls plugs into the dialer.

Campaigns are such work: the dialer turns their contacts into calls as it reaches them,
dials them under the campaign's own settings, and tells the campaign what became of each.
The dialer defines what it needs here and never imports campaigns; `outdial.wiring` plugs
the campaigns' implementation in at startup. A job's `campaign_id` names its source."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.calls.statuses import EndReason, ParticipantStatus


@dataclass(frozen=True, slots=True)
class RunningSource:
    """A source whose jobs a claim may take now, with its own concurrency cap."""

    id: str
    max_concurrency: int
    has_more: bool
    """Whether it has work not yet turned into jobs (`queue_more` would find some)."""


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """A source's dialing settings as they are now, overriding those its calls were queued
    with (a campaign's settings changed while paused apply on resume)."""

    calling_window: dict[str, Any] | None
    retry: dict[str, Any] | None
    ring_timeout_seconds: int
    calls_per_second: float | None
    max_attempts: int | None
    state_rules: bool
    """Whether state rules bind its calls (dialer/state_rules.py)."""
    max_attempts_per_24h: int
    """The frequency cap under state rules."""


@dataclass(frozen=True, slots=True)
class ParticipantChange:
    """One participant's move to `status` (see dialer/status.py), with what it sets."""

    participant_id: str
    tenant_id: str
    status: ParticipantStatus
    at: datetime
    attempts: int = 0
    """+1 when it is dialed, -1 when an attempt is withdrawn (never received)."""
    end_reason: EndReason | None = None
    answered_at: datetime | None = None
    duration_seconds: int | None = None
    cost_micros: int = 0
    campaign_id: str | None = None
    """Its job's source, and the number dialed: what the source keys its records by."""
    number: str | None = None
    dials: int = 0
    """Attempts made for it once this change is written."""


class Source(Protocol):
    """What the dialer asks of a source of work (campaigns)."""

    def tenants_with_work(self) -> ColumnElement[bool]:
        """A condition, correlated to `tenants.id`, true when the tenant has work to queue."""
        ...

    async def running(self, session: AsyncSession, *, tenant_id: str) -> list[RunningSource]:
        """The tenant's running sources, locked until the claim's transaction ends."""
        ...

    async def queue_more(
        self,
        session: AsyncSession,
        *,
        tenant_id: str,
        source: RunningSource,
        count: int,
        now: datetime,
    ) -> list[str]:
        """Turn up to `count` more of the source's work into calls and jobs due now; answers
        the new jobs' ids, for the claim to take."""
        ...

    async def policies(
        self, session: AsyncSession, *, source_ids: Collection[str]
    ) -> dict[str, SourcePolicy]:
        """Each source's dialing settings as they are now."""
        ...

    async def recipient_zones(
        self, session: AsyncSession, *, recipients: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """Time zones given for these (source id, number) recipients, where one was given."""
        ...

    async def participants_changed(
        self, session: AsyncSession, *, changes: Sequence[ParticipantChange]
    ) -> None:
        """Follow its participants' status changes (those with a `campaign_id`)."""
        ...

    async def jobs_finished(self, session: AsyncSession, *, source_ids: Collection[str]) -> None:
        """Some of these sources' jobs became final: a source with nothing left may end."""
        ...

    async def using(
        self,
        session: AsyncSession,
        *,
        tenant_id: str,
        from_number: str | None = None,
        agent_id: str | None = None,
    ) -> list[str]:
        """The tenant's sources with work to do (started, not finished) that dial from this
        caller ID, or as this agent; locked, like `running`, until the transaction ends."""
        ...

    async def end_unqueued(
        self,
        session: AsyncSession,
        *,
        source_ids: Collection[str],
        end_reason: EndReason,
    ) -> None:
        """End these sources' work not yet queued as jobs, with `end_reason`: they queue no
        more, and end once their queued work has."""
        ...


_plugged: Source | None = None


def plug(source: Source) -> None:
    """Make `source` the dialer's source of campaign work (at startup)."""
    global _plugged
    _plugged = source


def source() -> Source:
    """The source plugged in."""
    assert _plugged is not None, "nothing plugged into the dialer: call outdial.wiring.plug_all()"
    return _plugged
