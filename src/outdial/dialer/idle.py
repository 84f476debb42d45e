"""The idle-call sweep: a call whose participants are all WebRTC, made with a provider that
does not report WebRTC participants (`sees_webrtc`), has nobody anyone can see: nothing but
`POST /v1/calls/{id}/end` would ever end it. Each dialer ends those open longer than the idle
limit (dialer/status.end_idle_webrtc_calls), one dialer at a time."""

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.db import try_advisory_xact_lock, utcnow
from outdial.dialer.failures import FailureWindow
from outdial.dialer.status import end_idle_webrtc_calls

log = logging.getLogger("outdial.dialer")

SWEEP_LOCK = "outdial.webrtc.idle"


class IdleCallSweep:
    """Ends idle all-WebRTC calls every `every` seconds until cancelled."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        idle_limit: timedelta,
        every: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.idle_limit = idle_limit
        self.every = every

    async def run(self) -> None:
        """Sweep, then wait `every` seconds, until cancelled."""
        failures = FailureWindow(log, "idle-call sweep")
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()
            await asyncio.sleep(self.every)

    async def sweep(self) -> int:
        """End the calls idle past the limit; answers how many. Another dialer sweeping at
        the same moment makes this one skip its turn (their ends would be the same)."""
        async with self.sessionmaker() as session, session.begin():
            if not await try_advisory_xact_lock(session, SWEEP_LOCK):
                return 0
            ended = await end_idle_webrtc_calls(session, idle_limit=self.idle_limit, now=utcnow())
        if ended:
            log.info("ended %d idle WebRTC call(s)", ended)
        return ended
