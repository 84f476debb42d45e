"""The heartbeat loop: renews this dialer's lease, and carries out the hang-ups someone asked
for (POST /v1/calls/{id}/end) on calls this dialer placed."""

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.db import utcnow
from outdial.dialer.attempts import hangups_requested, provider_call_ids, settled_attempts
from outdial.dialer.failures import FailureWindow
from outdial.dialer.leases import renew_lease
from outdial.dialer.live import LiveCalls
from outdial.dialer.placer import Placer
from outdial.telephony.base import TelephonyProvider

log = logging.getLogger("outdial.dialer")


async def hang_up(
    sessionmaker: async_sessionmaker[AsyncSession],
    provider: TelephonyProvider,
    attempt_ids: list[str],
) -> None:
    """Ask the provider to end these calls, each named by the carrier's id as stored."""
    if not attempt_ids:
        return
    async with sessionmaker() as session, session.begin():
        call_ids = await provider_call_ids(session, attempt_ids=attempt_ids)
    for attempt_id in attempt_ids:
        await provider.hangup(attempt_id, provider_call_id=call_ids.get(attempt_id))


class Heartbeat:
    """Every third of a lease: renew the lease, forget live calls whose end another process
    wrote, and hang up (or, not yet placed, hand back) the calls someone asked to end."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        provider: TelephonyProvider,
        live: LiveCalls,
        placer: Placer,
        *,
        dialer_id: str,
        lease: timedelta,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.provider = provider
        self.live = live
        self.placer = placer
        self.dialer_id = dialer_id
        self.lease = lease

    async def run(self) -> None:
        """Beat until cancelled."""
        failures = FailureWindow(log, "renewing the lease")
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                await self.beat()
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()

    async def beat(self) -> None:
        """One heartbeat."""
        # On its own: claims renew the same row and must not wait behind the reads.
        async with self.sessionmaker() as session, session.begin():
            await renew_lease(session, dialer_id=self.dialer_id, lease_until=utcnow() + self.lease)
        async with self.sessionmaker() as session, session.begin():
            hangups = await hangups_requested(session, dialer_id=self.dialer_id)
            # Ends reported by carrier callbacks are written by the API, not by us.
            ended_elsewhere = await settled_attempts(session, attempt_ids=self.live.ids())
        self.live.ended(ended_elsewhere)
        # A dial still waiting for its slot is never placed: withdrawn, it is canceled.
        await self.placer.hand_back(hangups)
        await hang_up(self.sessionmaker, self.provider, hangups)
