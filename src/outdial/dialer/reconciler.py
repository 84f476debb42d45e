"""The reconciler loop: takes over the jobs of dialers that stopped renewing their leases and
settles their in-flight attempts by what the provider knows of them."""

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.calls.statuses import EndReason
from outdial.db import utcnow
from outdial.dialer.attempts import (
    InFlightAttempt,
    attempts_by_id,
    orphan_attempts,
    provider_call_ids,
    withdraw_attempts,
)
from outdial.dialer.breaker import Backoff
from outdial.dialer.claim import release_jobs, uncount_attempts
from outdial.dialer.failures import FailureWindow
from outdial.dialer.leases import forget_dead_dialers, take_over_expired
from outdial.dialer.live import LiveCalls
from outdial.dialer.outcomes import end_reason
from outdial.dialer.pacing import SLOT_SLACK_SECONDS
from outdial.dialer.settle import Ending, report_settled, settle
from outdial.dialer.statuses import AttemptStatus
from outdial.telephony.base import TelephonyProvider

log = logging.getLogger("outdial.dialer")

DEAD_DIALER_MEMORY = timedelta(days=1)
TAKE_OVER_LIMIT = 500
HAND_OVER_SECONDS = 1.0
"""How long a dial the placer let go at its slot may take to reach the provider."""


async def _past_their_slots(orphans: Sequence[InFlightAttempt]) -> None:
    """Wait until the dialer that claimed these could no longer place any of them. A lease
    lapses with its dialer alive when that dialer is starved (its claim's renewal still
    uncommitted, its heartbeat queued behind it): its placer then still hands each dial to
    the provider at its slot, and one asked of the provider before would be found never
    received, withdrawn, and dialed twice. After its slot and the placer's slack, a dial is
    the provider's or is never placed (a late dial is re-slotted only by the dialer that still
    holds its job, which now is this one)."""
    slots = [o.dial_at for o in orphans if o.status == AttemptStatus.PLACING]
    if slots:
        wait = (max(slots) - utcnow()).total_seconds() + SLOT_SLACK_SECONDS + HAND_OVER_SECONDS
        await asyncio.sleep(max(wait, 0))


class Reconciler:
    """Settles attempts of unknown fate, never dialing one again unless the provider says it
    never received it."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        provider: TelephonyProvider,
        live: LiveCalls,
        *,
        dialer_id: str,
        lease: timedelta,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.provider = provider
        self.live = live
        self.dialer_id = dialer_id
        self.lease = lease

    async def run(self) -> None:
        """Reconcile expired leases every third of a lease until cancelled."""
        interval = self.lease.total_seconds() / 3
        failures = FailureWindow(log, "reconciliation")
        while True:
            try:
                await self.reconcile_expired()
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()
            await asyncio.sleep(interval)

    async def reconcile_expired(self) -> int:
        """Take over the jobs of dialers that stopped renewing their leases and settle their
        in-flight attempts with the provider's help; answers how many jobs were taken over."""
        now = utcnow()
        async with self.sessionmaker() as session, session.begin():
            job_ids = await take_over_expired(
                session,
                dialer_id=self.dialer_id,
                now=now,
                lease_until=now + self.lease,
                limit=TAKE_OVER_LIMIT,
            )
            orphans = await orphan_attempts(session, job_ids=job_ids)
            in_flight = {o.job_id for o in orphans}
            # Active with no attempt in flight: its claim counted an attempt never made.
            never_dialed = [j for j in job_ids if j not in in_flight]
            await uncount_attempts(session, job_ids=never_dialed)
            await release_jobs(session, job_ids=never_dialed)
            await forget_dead_dialers(session, expired_before=now - DEAD_DIALER_MEMORY)
        if orphans:
            log.warning("reconciling %d attempts of a stopped dialer", len(orphans))
            await _past_their_slots(orphans)
            await self.reconcile([o.id for o in orphans])
        return len(job_ids)

    async def reconcile(self, attempt_ids: Iterable[str], backoff: Backoff | None = None) -> None:
        """Settle attempts of unknown fate by what the provider knows: never received → the
        attempt is withdrawn and the job queued again (after the `backoff`'s next delay for
        it, if given); ended → settled as it ended; still live → left to its events; unknown
        → ended `lost`, never redialed."""
        attempt_ids = list(attempt_ids)
        async with self.sessionmaker() as session, session.begin():
            call_ids = await provider_call_ids(session, attempt_ids=attempt_ids)
        states = {
            a: await self.provider.lookup(a, provider_call_id=call_ids.get(a)) for a in attempt_ids
        }
        async with self.sessionmaker() as session, session.begin():
            orphans = await attempts_by_id(session, attempt_ids=list(states))
            never = [o for o in orphans if states[o.id].status == "never_received"]
            await withdraw_attempts(session, attempts=never, backoff=backoff)
            endings: list[Ending] = []
            for orphan in orphans:
                state = states[orphan.id]
                if state.status == "ended" and state.end is not None:
                    end = state.end
                    endings.append(
                        Ending(
                            orphan.job_id,
                            orphan.id,
                            end_reason(end.end_reason, answered_by=orphan.answered_by),
                            end.at,
                            end.talk_seconds,
                        )
                    )
                elif state.status == "unknown":
                    endings.append(Ending(orphan.job_id, orphan.id, EndReason.LOST, utcnow()))
            settled = await settle(session, endings=endings)
        report_settled(settled)
        self.live.ended(a for a, state in states.items() if state.status != "live")
