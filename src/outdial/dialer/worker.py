"""The dialer: claims due jobs, paces and places their calls, and settles what happens.

Its loops: `claim` (fair rounds over tenants), `write` (batches provider events into the
database), `keep_leases` (heartbeat, and hang-ups someone asked for) and `reconcile` (takes
over jobs of dialers that stopped renewing their leases). An attempt is committed before the
provider hears of it; an attempt whose fate is unknown is asked of the provider and is never
dialed again unless the provider says it never received it."""

import asyncio
import heapq
import itertools
import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.billing.service import increment_cost_micros
from outdial.calls.schemas import CallingWindow
from outdial.config import DIAL_LEAD_SECONDS, Settings
from outdial.db import create_engine, create_sessionmaker, utcnow
from outdial.dialer import campaign_queue, queue
from outdial.dialer.queue import ClaimedJob, DialPolicy, Ending, NewAttempt, TenantLimits
from outdial.dialer.windows import next_allowed_at
from outdial.ids import new_id
from outdial.telephony.base import CallEvent, DialRequest, TelephonyProvider
from outdial.telephony.registry import create_provider

log = logging.getLogger("outdial.dialer")

NO_CREDIT_RETRY = timedelta(seconds=30)
PLACE_FAILURE_BACKOFF = timedelta(seconds=10)
WINDOW_NEVER_OPENS_RETRY = timedelta(hours=6)
DEAD_DIALER_MEMORY = timedelta(days=1)
WRITE_BATCH = 500
DIAL_LEAD = timedelta(seconds=DIAL_LEAD_SECONDS)
MAX_DIAL_LATENESS = queue.SLOT_SLACK_SECONDS * 0.9
PLACER_TICK = 0.01
"""The placer wakes at least this often while dials wait for their slots, so a dial that
joins ahead of the earliest one waits at most this long past its slot."""
CLAIM_COST_PER_JOB = timedelta(microseconds=200)
CONTENDED_RETRY_SECONDS = 0.01
"""How soon to claim again when another dialer held a tenant's queue (it claims for a
fraction of a second; sleeping a whole poll interval would leave the tenant's work idle)."""


@dataclass(frozen=True, slots=True)
class Placed:
    attempt_id: str
    provider_call_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """An attempt that missed its dial slot and was never placed: its job is due again."""

    attempt_id: str


@lru_cache(maxsize=1024)
def _window(frozen: str) -> CallingWindow:
    """Calls store their window as JSON; parse each distinct one once."""
    return CallingWindow.model_validate_json(frozen)


def _epoch(at: datetime) -> float:
    return at.timestamp()


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Dialer:
    """One dialer process's engine. Run many against PostgreSQL; one against SQLite."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        provider: TelephonyProvider | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_id('dialer')[-8:]}"
        self.provider = provider or create_provider(settings, self._on_event)
        self.lease = timedelta(seconds=settings.dialer_lease_seconds)
        self._events: asyncio.Queue[CallEvent | Placed | Withdrawn] = asyncio.Queue()
        # Dials waiting for their slot: a heap by slot time, and the attempts still in it
        # (handing one back just forgets it here; the placer then skips it).
        self._slots: list[tuple[float, int, DialRequest]] = []
        self._slot_order = itertools.count()
        self._waiting_to_place: set[str] = set()
        self._slot_added = asyncio.Event()
        self._handing_over: set[asyncio.Task[None]] = set()
        self._placer: asyncio.Task[None] | None = None
        self._live: set[str] = set()
        self._no_live_calls = asyncio.Event()
        self._no_live_calls.set()
        self._round = 0
        self._contended = False
        self._stopping = asyncio.Event()

    async def _on_event(self, event: CallEvent) -> None:
        await self._events.put(event)

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dial until `stop` is set, then shut down gracefully: stop claiming, hand back
        attempts not yet placed, let live calls finish (hanging up after the grace period)."""
        log.info("dialer %s starting", self.id)
        background = [
            asyncio.create_task(self._write_loop(), name="write"),
            asyncio.create_task(self._lease_loop(), name="leases"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
        ]
        claimer = asyncio.create_task(self._claim_loop(), name="claim")
        await stop.wait()
        self._stopping.set()
        await claimer
        await self._hand_back_unplaced()
        await self._finish_live_calls()
        await self._events.join()
        if self._placer is not None:
            background.append(self._placer)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.provider.aclose()
        log.info("dialer %s stopped", self.id)

    async def _hand_back_unplaced(self, attempt_ids: Iterable[str] | None = None) -> None:
        """Take back dials not yet handed to the provider (all, or these) and withdraw them."""
        wanted = list(self._waiting_to_place) if attempt_ids is None else attempt_ids
        ids = [a for a in wanted if a in self._waiting_to_place]
        self._waiting_to_place.difference_update(ids)
        if ids:
            async with self.sessionmaker() as session, session.begin():
                orphans = await queue.attempts_by_id(session, attempt_ids=ids)
                await queue.withdraw_attempts(session, attempts=orphans)

    async def _finish_live_calls(self) -> None:
        if await self._all_settled(self.settings.dialer_shutdown_grace_seconds):
            return
        await self._hang_up(list(self._live))
        await self._all_settled(5)

    async def _hang_up(self, attempt_ids: list[str]) -> None:
        """Ask the provider to end these calls, each named by the carrier's id as stored."""
        if not attempt_ids:
            return
        async with self.sessionmaker() as session, session.begin():
            call_ids = await queue.provider_call_ids(session, attempt_ids=attempt_ids)
        for attempt_id in attempt_ids:
            await self.provider.hangup(attempt_id, provider_call_id=call_ids.get(attempt_id))

    async def _all_settled(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._no_live_calls.wait(), within)
        except TimeoutError:
            return False
        return True

    def _live_started(self, attempt_id: str) -> None:
        self._live.add(attempt_id)
        self._no_live_calls.clear()

    def _live_ended(self, attempt_ids: Iterable[str]) -> None:
        self._live.difference_update(attempt_ids)
        if not self._live:
            self._no_live_calls.set()

    # --- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            self._contended = False
            try:
                claimed = await self.claim_round()
            except Exception:
                log.exception("claim round failed")
                claimed = 0
            if not claimed:
                pause = (
                    CONTENDED_RETRY_SECONDS
                    if self._contended
                    else self.settings.dialer_poll_seconds
                )
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=pause)
                except TimeoutError:
                    pass

    async def claim_round(self) -> int:
        """Claim and start one round of due jobs, shared fairly among tenants with work:
        each gets an equal share, in an order that rotates every round."""
        async with self.sessionmaker() as session, session.begin():
            tenants = await queue.tenants_with_due_jobs(session, now=utcnow())
        if not tenants:
            return 0
        start = self._round % len(tenants)
        self._round += 1
        share = max(1, self.settings.dialer_batch_size // len(tenants))
        claimed = 0
        for tenant in tenants[start:] + tenants[:start]:
            if self._stopping.is_set():
                break
            claimed += await self._claim_tenant(tenant, share)
        return claimed

    async def _claim_tenant(self, tenant: TenantLimits, limit: int) -> int:
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            if not await queue.lock_tenant_queue(session, tenant.id):
                self._contended = True
                return 0
            jobs = await queue.claim_jobs(
                session,
                tenant=tenant,
                dialer_id=self.id,
                now=now,
                lease_until=now + self.lease,
                limit=limit,
            )
            if not jobs:
                return 0
            policies = await queue.policies_for(session, call_ids={j.call_id for j in jobs})
            ready, endings, later = await self._triage(session, tenant, jobs, policies, now)
            attempts, unpaced = await self._pace(session, tenant, ready, policies, now)
            later.extend(unpaced)
            dialed = {a.job.id for a in attempts}
            await queue.uncount_attempts(
                session, job_ids=[j.id for j in jobs if j.id not in dialed]
            )
            for run_at, job_ids in _grouped(later).items():
                await queue.release_jobs(session, job_ids=job_ids, run_at=run_at)
            await queue.settle(session, endings=endings)
            await queue.start_attempts(
                session, attempts=attempts, dialer_id=self.id, provider=self.provider.name
            )
            await campaign_queue.hold_first_dials(
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
        for attempt in attempts:
            self._schedule_place(attempt, policies[attempt.job.call_id])
        return len(jobs)

    async def _triage(
        self,
        session: AsyncSession,
        tenant: TenantLimits,
        jobs: list[ClaimedJob],
        policies: dict[str, DialPolicy],
        now: datetime,
    ) -> tuple[list[ClaimedJob], list[Ending], list[tuple[datetime, str]]]:
        """Split claimed jobs: dial now; end now (on the DNC list since they were queued);
        or wait (no credit, or outside their calling window) until a given time."""
        blocked = await queue.blocked_numbers(
            session, tenant_id=tenant.id, numbers={j.to_number for j in jobs}
        )
        in_credit = await queue.tenant_in_credit(session, tenant_id=tenant.id)
        zones = await campaign_queue.contact_timezones(
            session, contacts={(j.campaign_id, j.to_number) for j in jobs if j.campaign_id}
        )
        ready: list[ClaimedJob] = []
        endings: list[Ending] = []
        later: list[tuple[datetime, str]] = []
        for job in jobs:
            if job.to_number in blocked:
                endings.append(Ending(job.id, None, "dnc", now))
            elif not in_credit:
                later.append((now + NO_CREDIT_RETRY, job.id))
            elif (opens := self._window_opens(job, policies[job.call_id], zones, now)) > now:
                later.append((opens, job.id))
            else:
                ready.append(job)
        return ready, endings, later

    def _window_opens(
        self,
        job: ClaimedJob,
        policy: DialPolicy,
        contact_zones: dict[tuple[str, str], str],
        now: datetime,
    ) -> datetime:
        if policy.calling_window is None:
            return now
        window = _window(json.dumps(policy.calling_window, sort_keys=True))
        # A campaign contact's own zone, where given, replaces the number's.
        zone = contact_zones.get((job.campaign_id, job.to_number)) if job.campaign_id else None
        opens = next_allowed_at(window, number=job.to_number, contact_timezone=zone, now=now)
        # Zones whose windows never overlap: look again later (DST may change that).
        return opens if opens is not None else now + WINDOW_NEVER_OPENS_RETRY

    async def _pace(
        self,
        session: AsyncSession,
        tenant: TenantLimits,
        jobs: list[ClaimedJob],
        policies: dict[str, DialPolicy],
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
        ids = iter(queue.new_attempt_ids(len(jobs)))
        horizon = self.settings.pacing_horizon_seconds
        reserved = await queue.reserve_slots(
            session,
            wanted={number: len(group) for number, group in by_caller.items()},
            calls_per_second=rates,
            # The first slot must still lie ahead once this claim commits, which takes
            # longer the more jobs it writes.
            now=_epoch(utcnow() + DIAL_LEAD + CLAIM_COST_PER_JOB * len(jobs)),
            horizon=horizon,
        )
        for from_number, group in by_caller.items():
            slots = reserved[from_number]
            for job, slot in zip(group, slots, strict=False):
                attempts.append(NewAttempt(next(ids), job, job.attempt, _from_epoch(slot)))
            retry_at = now + timedelta(seconds=horizon / 2)
            later.extend((retry_at, job.id) for job in group[len(slots) :])
        return attempts, later

    # --- placing -------------------------------------------------------------------------

    def _schedule_place(self, attempt: NewAttempt, policy: DialPolicy) -> None:
        request = DialRequest(
            attempt_id=attempt.id,
            to=attempt.job.to_number,
            from_number=attempt.job.from_number,
            ring_timeout_seconds=policy.ring_timeout_seconds,
            voicemail_behavior=policy.voicemail_behavior,
        )
        heapq.heappush(self._slots, (_epoch(attempt.dial_at), next(self._slot_order), request))
        self._waiting_to_place.add(attempt.id)
        self._slot_added.set()
        if self._placer is None:
            self._placer = asyncio.create_task(self._place_loop(), name="place")

    async def _place_loop(self) -> None:
        """Hand each waiting dial to the provider when its slot comes: one loop and one heap
        for all of them, rather than a sleeping task each."""
        while True:
            try:
                self._place_due(time.time())
            except Exception:
                # Nothing else would ever place the waiting dials: log, and keep going.
                log.exception("placing due dials failed")
            if not self._slots:
                self._slot_added.clear()
                await self._slot_added.wait()
                continue
            await asyncio.sleep(min(max(self._slots[0][0] - time.time(), 0), PLACER_TICK))

    def _place_due(self, now: float) -> None:
        while self._slots and self._slots[0][0] <= now:
            slot, _, request = heapq.heappop(self._slots)
            if request.attempt_id not in self._waiting_to_place:
                continue  # handed back meanwhile
            # From here the attempt is the provider's: shutdown no longer hands it back.
            self._waiting_to_place.discard(request.attempt_id)
            self._live_started(request.attempt_id)
            task = asyncio.create_task(self._hand_to_provider(request, slot))
            self._handing_over.add(task)
            task.add_done_callback(self._handing_over.discard)

    async def _hand_to_provider(self, request: DialRequest, slot: float) -> None:
        # Judged at the last moment before the provider hears of it: a pause, and pacing,
        # count on no dial starting later than its slot plus the slack.
        if (late := time.time() - slot) > MAX_DIAL_LATENESS:
            # Placed now it would crowd the caller ID's next slot, which another dialer may
            # hold: pacing holds across dialers only if every dial keeps to its slot.
            log.info("%s missed its dial slot by %.3f s; handed back", request.attempt_id, late)
            self._live_ended([request.attempt_id])
            await self._events.put(Withdrawn(request.attempt_id))
            return
        try:
            provider_call_id = await self.provider.place(request)
        except Exception:
            log.exception(
                "placing %s failed; asking the provider what happened", request.attempt_id
            )
            await self._reconcile([request.attempt_id], retry_at=utcnow() + PLACE_FAILURE_BACKOFF)
            return
        await self._events.put(Placed(request.attempt_id, provider_call_id, utcnow()))

    # --- writing events ------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._events.get()]
            while len(batch) < WRITE_BATCH and not self._events.empty():
                batch.append(self._events.get_nowait())
            try:
                await self._write(batch)
            except Exception:
                log.exception("writing %d call events failed; retrying", len(batch))
                for item in batch:
                    self._events.put_nowait(item)
                await asyncio.sleep(0.5)
            finally:
                for _ in batch:
                    self._events.task_done()

    async def _write(self, batch: list[CallEvent | Placed | Withdrawn]) -> None:
        placed = [(p.attempt_id, p.provider_call_id, p.at) for p in batch if isinstance(p, Placed)]
        withdrawn = [w.attempt_id for w in batch if isinstance(w, Withdrawn)]
        events = [e for e in batch if isinstance(e, CallEvent)]
        async with self.sessionmaker() as session, session.begin():
            await queue.record_call_events(session, events=events, placed=placed)
            late = await queue.attempts_by_id(session, attempt_ids=withdrawn)
            await queue.withdraw_attempts(session, attempts=late)
        self._live_ended(e.attempt_id for e in events if e.kind == "ended")

    # --- leases, hang-ups, reconciliation ---------------------------------------------------

    async def _lease_loop(self) -> None:
        interval = self.settings.dialer_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                # On its own: claims renew the same row and must not wait behind the reads.
                async with self.sessionmaker() as session, session.begin():
                    await queue.renew_lease(
                        session, dialer_id=self.id, lease_until=utcnow() + self.lease
                    )
                async with self.sessionmaker() as session, session.begin():
                    hangups = await queue.hangups_requested(session, dialer_id=self.id)
                    # Ends reported by carrier callbacks are written by the API, not by us.
                    ended_elsewhere = await queue.settled_attempts(
                        session, attempt_ids=list(self._live)
                    )
                self._live_ended(ended_elsewhere)
                # A dial still waiting for its slot is never placed: withdrawn, it is canceled.
                await self._hand_back_unplaced(hangups)
                await self._hang_up(hangups)
            except Exception:
                log.exception("renewing leases failed")

    async def _reconcile_loop(self) -> None:
        interval = self.settings.dialer_lease_seconds / 3
        while True:
            try:
                await self.reconcile_expired()
            except Exception:
                log.exception("reconciliation failed")
            await asyncio.sleep(interval)

    async def reconcile_expired(self) -> int:
        """Take over the jobs of dialers that stopped renewing their leases and settle their
        in-flight attempts with the provider's help."""
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            job_ids = await queue.take_over_expired(
                session, dialer_id=self.id, now=now, lease_until=now + self.lease, limit=500
            )
            orphans = await queue.orphan_attempts(session, job_ids=job_ids)
            in_flight = {o.job_id for o in orphans}
            # Active with no attempt in flight: its claim counted an attempt never made.
            never_dialed = [j for j in job_ids if j not in in_flight]
            await queue.uncount_attempts(session, job_ids=never_dialed)
            await queue.release_jobs(session, job_ids=never_dialed)
            await queue.forget_dead_dialers(session, expired_before=now - DEAD_DIALER_MEMORY)
        if orphans:
            log.warning("reconciling %d attempts of a stopped dialer", len(orphans))
            await self._reconcile([o.id for o in orphans])
        return len(job_ids)

    async def _reconcile(
        self, attempt_ids: Iterable[str], *, retry_at: datetime | None = None
    ) -> None:
        """Settle attempts of unknown fate by what the provider knows: never received → the
        attempt is withdrawn and the job queued again; ended → settled as it ended; still
        live → left to its events; unknown → ended `lost`, never redialed."""
        attempt_ids = list(attempt_ids)
        async with self.sessionmaker() as session, session.begin():
            call_ids = await queue.provider_call_ids(session, attempt_ids=attempt_ids)
        states = {
            a: await self.provider.lookup(a, provider_call_id=call_ids.get(a)) for a in attempt_ids
        }
        async with self.sessionmaker() as session, session.begin():
            orphans = await queue.attempts_by_id(session, attempt_ids=list(states))
            never = [o for o in orphans if states[o.id].status == "never_received"]
            await queue.withdraw_attempts(session, attempts=never, run_at=retry_at)
            endings: list[Ending] = []
            for orphan in orphans:
                state = states[orphan.id]
                if state.status == "ended" and state.end is not None:
                    end = state.end
                    endings.append(
                        Ending(
                            orphan.job_id,
                            orphan.id,
                            end.end_reason or "carrier_error",
                            end.at,
                            end.talk_seconds,
                        )
                    )
                elif state.status == "unknown":
                    endings.append(Ending(orphan.job_id, orphan.id, "lost", utcnow()))
            await queue.settle(session, endings=endings)
        self._live_ended(a for a, state in states.items() if state.status != "live")


def _grouped(later: list[tuple[datetime, str]]) -> dict[datetime, list[str]]:
    groups: dict[datetime, list[str]] = defaultdict(list)
    for run_at, job_id in later:
        groups[run_at].append(job_id)
    return groups


async def run_dialer(settings: Settings, stop: asyncio.Event) -> None:
    """Run one dialer against the configured database until `stop` is set."""
    engine = create_engine(settings.database_url)
    try:
        await Dialer(create_sessionmaker(engine), settings).run(stop)
    finally:
        await engine.dispose()
