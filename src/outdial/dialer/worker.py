"""The dialer: one process's engine, wiring its loops together.

`claim` (claimer.py: fair rounds over tenants), `place` (placer.py: each dial at its pacing
slot), `write` (writer.py: provider events into the database), `heartbeat` (heartbeat.py:
the lease, and hang-ups someone asked for), `reconcile` (reconciler.py: jobs of dialers
that stopped renewing their leases) and `idle` (idle.py: all-WebRTC calls whose provider
cannot see their participants, open past the idle limit). An attempt is committed before
the provider hears of it; an attempt whose fate is unknown is asked of the provider and is
never dialed again unless the provider says it never received it."""

import asyncio
import logging
import os
import socket
from datetime import timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial import observability as obs
from outdial.config import Settings
from outdial.db import create_engine, create_sessionmaker, listening
from outdial.dialer import state_rules
from outdial.dialer.breaker import Backoff, CircuitBreaker
from outdial.dialer.capacity import PlacingCapacity
from outdial.dialer.claimer import Claimer
from outdial.dialer.failures import FailureWindow
from outdial.dialer.heartbeat import Heartbeat, hang_up
from outdial.dialer.idle import IdleCallSweep
from outdial.dialer.jobs import JOBS_CHANNEL
from outdial.dialer.live import LiveCalls
from outdial.dialer.placer import Placer
from outdial.dialer.reconciler import Reconciler
from outdial.dialer.writer import EventWriter
from outdial.ids import new_id
from outdial.telephony.base import TelephonyProvider
from outdial.telephony.registry import create_provider

log = logging.getLogger("outdial.dialer")

CONTENDED_RETRY_SECONDS = 0.01
"""How soon to claim again when another dialer held a tenant's queue (it claims for a
fraction of a second; sleeping a whole poll interval would leave the tenant's work idle)."""
HANG_UP_WAIT_SECONDS = 5


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
        lease = timedelta(seconds=settings.dialer_lease_seconds)
        capacity = PlacingCapacity()
        self.live = LiveCalls()
        self.writer = EventWriter(sessionmaker, self.live)
        self.provider = provider or create_provider(settings, self.writer.put)
        self.reconciler = Reconciler(
            sessionmaker, self.provider, self.live, dialer_id=self.id, lease=lease
        )
        self.breaker = CircuitBreaker(
            failures_to_open=settings.dialer_breaker_failures,
            cool_down=settings.dialer_breaker_cool_down_seconds,
            on_change=partial(obs.provider_circuit_changed, self.provider.name),
        )
        self.placer = Placer(
            sessionmaker,
            self.provider,
            self.writer,
            self.live,
            reconcile=self.reconciler.reconcile,
            capacity=capacity,
            backoff=Backoff.of_seconds(settings.dialer_unreachable_backoff_seconds),
            breaker=self.breaker,
            dialer_id=self.id,
            lease=lease,
            horizon=settings.pacing_horizon_seconds,
        )
        self.heartbeat = Heartbeat(
            sessionmaker, self.provider, self.live, self.placer, dialer_id=self.id, lease=lease
        )
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.claimer = Claimer(
            sessionmaker,
            settings,
            self.placer,
            dialer_id=self.id,
            lease=lease,
            stopping=self._stopping,
            capacity=capacity,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Dial until `stop` is set, then shut down gracefully: stop claiming, hand back
        attempts not yet placed, let live calls finish (hanging up after the grace period)."""
        log.info("dialer %s starting", self.id)
        state_rules.load_geocoder()
        background = [
            asyncio.create_task(self.writer.run(), name="write"),
            asyncio.create_task(self.placer.run(), name="place"),
            asyncio.create_task(self.heartbeat.run(), name="heartbeat"),
            asyncio.create_task(self.reconciler.run(), name="reconcile"),
        ]
        sweep = IdleCallSweep(
            self.sessionmaker,
            idle_limit=timedelta(seconds=self.settings.webrtc_idle_limit_seconds),
            every=self.settings.webrtc_idle_sweep_seconds,
        )
        background.append(asyncio.create_task(sweep.run(), name="idle"))
        async with listening(self.settings.database_url, JOBS_CHANNEL, self._wake.set):
            claiming = asyncio.create_task(self._claim_loop(), name="claim")
            await stop.wait()
            self._stopping.set()
            self._wake.set()
            await claiming
        await self.placer.hand_back()
        await self._finish_live_calls()
        await self._write_what_is_left()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.provider.aclose()
        log.info("dialer %s stopped", self.id)

    async def claim_round(self) -> int:
        """Claim and start one round of due jobs; answers how many were claimed."""
        return await self.claimer.claim_round()

    async def reconcile_expired(self) -> int:
        """Take over and settle the jobs of dialers whose leases lapsed."""
        return await self.reconciler.reconcile_expired()

    async def _claim_loop(self) -> None:
        """Claim while there is work; then wait for a wake-up (work queued: jobs.wake_dialers),
        or at most a poll interval (work that became due by the clock: retries, windows)."""
        failures = FailureWindow(log, "claiming")
        while not self._stopping.is_set():
            self.claimer.contended = False
            self._wake.clear()
            # A provider that stopped taking dials gets none (or one probe) until it is up.
            limit = self.breaker.claim_limit(dials_in_hand=self.placer.in_hand)
            try:
                claimed = await self.claimer.claim_round(limit) if limit != 0 else 0
            except Exception as exc:
                failures.failed(exc)
                claimed = 0
            else:
                failures.succeeded()
            if not claimed:
                pause = (
                    CONTENDED_RETRY_SECONDS
                    if self.claimer.contended
                    else self.settings.dialer_poll_seconds
                )
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)
                except TimeoutError:
                    pass

    async def _write_what_is_left(self) -> None:
        """Wait for the writer to drain, unless its writes have failed for a whole lease: a
        dialer whose database is gone would otherwise never exit. What it could not write is
        not lost: its lease lapses, and another dialer asks the provider what became of those
        attempts, as it does for a dialer that died."""
        unwritten = await self.writer.drained(give_up_after=self.settings.dialer_lease_seconds)
        if unwritten:
            log.error(
                "dialer %s stopping with %d call events unwritten: its writes failed for a "
                "whole lease; another dialer reconciles their attempts once its lease lapses",
                self.id,
                unwritten,
            )

    async def _finish_live_calls(self) -> None:
        if await self.live.all_ended(self.settings.dialer_shutdown_grace_seconds):
            return
        await hang_up(self.sessionmaker, self.provider, self.live.ids())
        await self.live.all_ended(HANG_UP_WAIT_SECONDS)


async def run_dialer(settings: Settings, stop: asyncio.Event) -> None:
    """Run one dialer against the configured database until `stop` is set."""
    engine = create_engine(settings.database_url)
    try:
        await Dialer(create_sessionmaker(engine), settings).run(stop)
    finally:
        await engine.dispose()
