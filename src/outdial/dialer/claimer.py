"""Claim rounds: due jobs claimed fairly across tenants, triaged (dial now, end now, or wait),
given pacing slots, committed as attempts, and handed to the placer."""

import asyncio
import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.billing.service import increment_cost_micros
from outdial.calls.schemas import CallingWindow
from outdial.calls.statuses import EndReason
from outdial.config import DIAL_LEAD_SECONDS, Settings
from outdial.db import utcnow
from outdial.dialer import claim, pacing, policy, settle
from outdial.dialer.attempts import NewAttempt, hold_first_dials, new_attempt_ids, start_attempts
from outdial.dialer.audit import Checks, ClaimAudit
from outdial.dialer.capacity import PlacingCapacity
from outdial.dialer.claim import ClaimedJob, TenantLimits
from outdial.dialer.pacing import SLOT_MARGIN
from outdial.dialer.placer import Placer
from outdial.dialer.policy import DialPolicy
from outdial.dialer.settle import Ending
from outdial.dialer.sources import source
from outdial.dialer.streams import room_targets, stream_targets
from outdial.dialer.windows import Judged, allowed_from, judged_in

NO_CREDIT_RETRY = timedelta(seconds=30)
FREQUENCY_PERIOD = timedelta(hours=24)
"""The frequency cap's period (dialer/state_rules.py, FREQUENCY_CAP_SOURCE)."""
WINDOW_NEVER_OPENS_RETRY = timedelta(hours=6)
COMMIT_LAG_PER_JOB = 0.001
"""The first guess at how long a claim takes, per job, from reserving its slots to its
commit (learnt from then on: `_commit_lag`)."""
COMMIT_LAG_MARGIN = 1.5


def _window(stored: dict[str, Any] | None) -> CallingWindow | None:
    """A call's window, as stored (JSON), parsed."""
    return None if stored is None else _parsed_window(json.dumps(stored, sort_keys=True))


@lru_cache(maxsize=1024)
def _parsed_window(frozen: str) -> CallingWindow:
    """Calls store their window as JSON; parse each distinct one once."""
    return CallingWindow.model_validate_json(frozen)


def _opens(judged: Judged, now: datetime, latest: datetime) -> datetime:
    """`now` if a dial placed any time from `now` to `latest` is inside what `judged` allows;
    else when to look again: the next opening (a window that closes before `latest` is left
    for its next opening, not dialed at its last moments)."""
    opens = allowed_from(judged, now)
    if opens == now:
        # Open now; open still at `latest` means open all along: windows open and close on
        # whole minutes, so no gap can hide between two instants seconds apart.
        opens = allowed_from(judged, latest)
        if opens == latest:
            return now
    # Zones whose windows never overlap: look again later (DST may change that).
    return opens if opens is not None else now + WINDOW_NEVER_OPENS_RETRY


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _grouped(later: list[tuple[datetime, str]]) -> dict[datetime, list[str]]:
    groups: dict[datetime, list[str]] = defaultdict(list)
    for run_at, job_id in later:
        groups[run_at].append(job_id)
    return groups


class Claimer:
    """Claims rounds of due jobs for one dialer and schedules their dials on its placer."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        placer: Placer,
        *,
        dialer_id: str,
        lease: timedelta,
        stopping: asyncio.Event,
        capacity: PlacingCapacity,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.placer = placer
        self.dialer_id = dialer_id
        self.lease = lease
        self.stopping = stopping
        self.capacity = capacity
        self.contended = False
        """Set when a round found a tenant's queue held by another dialer, or this dialer's
        schedule full: claim again soon, not after a whole poll interval."""
        self._round = 0
        self._commit_lag = COMMIT_LAG_PER_JOB
        """Seconds per job from reserving a claim's slots to its commit (a moving average):
        its first slot must lie no sooner, or its dials start late."""
        self._reserved_at = 0.0

    async def claim_round(self, limit: int | None = None) -> int:
        """Claim and start one round of due jobs (at most `limit`, the batch size, and what
        this dialer can place on time), shared fairly among tenants with work: each gets an
        equal share, in an order that rotates every round."""
        room = self.capacity.room()
        if room == 0:
            self.contended = True
            return 0
        async with self.sessionmaker() as session, session.begin():
            tenants = await claim.tenants_with_due_jobs(session, now=utcnow())
        if not tenants:
            return 0
        start = self._round % len(tenants)
        self._round += 1
        budget = min(room, self.settings.dialer_batch_size if limit is None else limit)
        share = max(1, budget // len(tenants))
        claimed = 0
        for tenant in tenants[start:] + tenants[:start]:
            if self.stopping.is_set() or (limit is not None and claimed >= limit):
                break
            wanted = share if limit is None else min(share, limit - claimed)
            claimed += await self._claim_tenant(tenant, wanted)
        return claimed

    async def _claim_tenant(self, tenant: TenantLimits, limit: int) -> int:
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            if not await claim.lock_tenant_queue(session, tenant.id):
                self.contended = True
                return 0
            jobs = await claim.claim_jobs(
                session,
                tenant=tenant,
                dialer_id=self.dialer_id,
                now=now,
                lease_until=now + self.lease,
                limit=limit,
            )
            if not jobs:
                return 0
            policies = await policy.policies_for(session, call_ids={j.call_id for j in jobs})
            ready, endings, later, checks = await self._triage(session, tenant, jobs, policies, now)
            attempts, unpaced = await self._pace(session, tenant, ready, policies, checks, now)
            later.extend(unpaced)
            dialed = {a.job.id for a in attempts}
            await claim.uncount_attempts(
                session, job_ids=[j.id for j in jobs if j.id not in dialed]
            )
            for run_at, job_ids in _grouped(later).items():
                await claim.release_jobs(session, job_ids=job_ids, run_at=run_at)
            stopped = await settle.settle(session, endings=endings)
            await start_attempts(
                session,
                attempts=attempts,
                dialer_id=self.dialer_id,
                provider=self.placer.provider.name,
            )
            streams = await stream_targets(
                session,
                attempts={
                    a.id: a.job.participant_id for a in attempts if policies[a.job.call_id].streams
                },
            )
            rooms = (
                await room_targets(session, attempts={a.id: a.job.participant_id for a in attempts})
                if self.placer.provider.sees_webrtc
                else {}
            )
            # Calls a source (campaign) queued hold nothing until they are dialed.
            await hold_first_dials(
                session,
                tenant_id=tenant.id,
                holds={
                    a.job.participant_id: increment_cost_micros(
                        policies[a.job.call_id].rate_per_minute_micros
                    )
                    for a in attempts
                    if a.job.campaign_id is not None
                },
            )
        if attempts:
            lag = (time.monotonic() - self._reserved_at) / len(jobs)
            self._commit_lag += (lag - self._commit_lag) / 4
        settle.report_settled(stopped)
        for attempt in attempts:
            self.placer.schedule(
                attempt,
                policies[attempt.job.call_id],
                stream=streams.get(attempt.id),
                room=rooms.get(attempt.id),
            )
        return len(jobs)

    async def _triage(
        self,
        session: AsyncSession,
        tenant: TenantLimits,
        jobs: list[ClaimedJob],
        policies: dict[str, DialPolicy],
        now: datetime,
    ) -> tuple[list[ClaimedJob], list[Ending], list[tuple[datetime, str]], dict[str, Checks]]:
        """Split claimed jobs: dial now (with the checks that allowed each, by job id); end
        now (on the DNC list since they were queued; or `not_permitted`: their caller ID no
        longer the tenant's, or their agent deleted); or wait until a given time (no credit;
        outside their calling window or their state's hours; over the frequency cap)."""
        blocked = await policy.blocked_numbers(
            session, tenant_id=tenant.id, numbers={j.to_number for j in jobs}
        )
        owned = await policy.owned_caller_ids(
            session, tenant_id=tenant.id, numbers={j.from_number for j in jobs}
        )
        available = await policy.available_credit(session, tenant_id=tenant.id)
        zones = await source().recipient_zones(
            session, recipients={(j.campaign_id, j.to_number) for j in jobs if j.campaign_id}
        )
        capped = {j.to_number for j in jobs if policies[j.call_id].state_rules}
        recent = await policy.recent_dials(
            session, tenant_id=tenant.id, numbers=capped, since=now - FREQUENCY_PERIOD
        )
        audit = ClaimAudit(now=now, available_micros=available)
        # A dial is placed at its slot, up to a pacing horizon (and the claim's own time)
        # from now: its window must hold until then, not only now.
        latest = now + timedelta(seconds=self.settings.pacing_horizon_seconds + SLOT_MARGIN)
        ready: list[ClaimedJob] = []
        endings: list[Ending] = []
        later: list[tuple[datetime, str]] = []
        checks: dict[str, Checks] = {}
        for job in jobs:
            rules = policies[job.call_id]
            if job.to_number in blocked:
                endings.append(Ending(job.id, None, EndReason.DNC, now))
                continue
            if job.from_number not in owned or not rules.agent_exists:
                endings.append(Ending(job.id, None, EndReason.NOT_PERMITTED, now))
                continue
            if available < 0:
                later.append((now + NO_CREDIT_RETRY, job.id))
                continue
            window = _window(rules.calling_window)
            judged = self._judged(job, rules, window, zones)
            if judged is not None and (opens := _opens(judged, now, latest)) > now:
                later.append((opens, job.id))
                continue
            limit = rules.max_attempts_per_24h if rules.state_rules else None
            dials = None
            if limit is not None:
                dials, first = recent.get(job.to_number, (0, now))
                if dials >= limit:
                    # Over the cap: wait until the first of those dials is 24 hours old.
                    later.append((first + FREQUENCY_PERIOD, job.id))
                    continue
                recent[job.to_number] = (dials + 1, first)
            ready.append(job)
            checks[job.id] = audit.checks(
                from_number=job.from_number,
                window=window,
                judged=judged,
                dials_in_24h=dials,
                limit=limit,
            )
        return ready, endings, later, checks

    def _judged(
        self,
        job: ClaimedJob,
        rules: DialPolicy,
        window: CallingWindow | None,
        contact_zones: dict[tuple[str, str], str],
    ) -> Judged | None:
        """What the job's hours are judged by, or None when neither a window nor state rules
        bind it."""
        if window is None and not rules.state_rules:
            return None
        # A campaign contact's own zone, where given, replaces the number's.
        zone = contact_zones.get((job.campaign_id, job.to_number)) if job.campaign_id else None
        return judged_in(
            window, number=job.to_number, contact_timezone=zone, state_rules=rules.state_rules
        )

    async def _pace(
        self,
        session: AsyncSession,
        tenant: TenantLimits,
        jobs: list[ClaimedJob],
        policies: dict[str, DialPolicy],
        checks: dict[str, Checks],
        now: datetime,
    ) -> tuple[list[NewAttempt], list[tuple[datetime, str]]]:
        """Give each job a dial slot of its caller ID; those without one wait a moment. A
        caller ID is paced at the tenant's rate, or a campaign's lower one when this claim
        dials it for a campaign."""
        by_caller: dict[str, list[ClaimedJob]] = defaultdict(list)
        rates: dict[str, float] = {}
        for job in jobs:
            by_caller[job.from_number].append(job)
            own = policies[job.call_id].calls_per_second or tenant.calls_per_second
            rates[job.from_number] = min(rates.get(job.from_number, tenant.calls_per_second), own)
        attempts: list[NewAttempt] = []
        later: list[tuple[datetime, str]] = []
        ids = iter(new_attempt_ids(len(jobs)))
        horizon = self.settings.pacing_horizon_seconds
        reservation = await pacing.reserve_slots(
            session,
            wanted={number: len(group) for number, group in by_caller.items()},
            calls_per_second=rates,
            # The first slot must still lie ahead once this claim commits, which takes
            # longer the more jobs it writes.
            now=time.time()
            + max(DIAL_LEAD_SECONDS, self._commit_lag * len(jobs) * COMMIT_LAG_MARGIN),
            horizon=horizon,
            cursor=self.capacity.cursor,
            dials_per_second=self.capacity.per_second,
        )
        # Kept even if this claim rolls back: a schedule booked a little too far ahead only
        # delays this dialer's next claim by as much.
        self.capacity.cursor = reservation.cursor
        self._reserved_at = time.monotonic()
        for from_number, group in by_caller.items():
            slots = reservation.slots[from_number]
            for job, slot in zip(group, slots, strict=False):
                attempts.append(
                    NewAttempt(
                        next(ids),
                        job,
                        job.attempt,
                        _from_epoch(slot),
                        rates[from_number],
                        checks[job.id],
                    )
                )
            retry_at = now + timedelta(seconds=horizon / 2)
            later.extend((retry_at, job.id) for job in group[len(slots) :])
        return attempts, later
