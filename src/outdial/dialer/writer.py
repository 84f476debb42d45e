"""The writer loop: what the provider reports (and what the placer did) reaches the database
in batches, one transaction per batch, in the order it happened."""

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial.dialer.attempts import attempts_by_id, withdraw_attempts
from outdial.dialer.failures import FailureWindow
from outdial.dialer.live import LiveCalls
from outdial.dialer.outcomes import record_call_events
from outdial.dialer.settle import report_settled
from outdial.telephony.base import CallEvent

log = logging.getLogger("outdial.dialer")

WRITE_BATCH = 500
LINGER_SECONDS = 0.01
"""After the first item of a batch, how long the writer waits for more: a dialer placing a
steady stream of dials would otherwise write each one's events in a transaction of its own."""
RETRY_PAUSE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Placed:
    """The provider has taken an attempt and named its call `provider_call_id`."""

    attempt_id: str
    provider_call_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """An attempt that missed its dial slot and was never placed: its job is due again."""

    attempt_id: str


Item = CallEvent | Placed | Withdrawn


class EventWriter:
    """Batches provider events, placements and withdrawals into the database. A batch that
    fails to write is queued again: while the dialer runs, an event is never dropped (for a
    dialer stopping without its database, see `Dialer._write_what_is_left`)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], live: LiveCalls) -> None:
        self.sessionmaker = sessionmaker
        self.live = live
        self._items: asyncio.Queue[Item] = asyncio.Queue()
        self._writing: list[Item] = []
        # When writing began to fail (the event loop's clock), while no write has succeeded
        # since: how `drained` tells a database that is gone from one that is slow.
        self._failing_since: float | None = None

    async def put(self, item: Item) -> None:
        """Queue one item for the next batch (the provider's event sink)."""
        await self._items.put(item)

    async def drained(self, *, give_up_after: float) -> int:
        """Wait until everything queued so far has been written, or until writing has failed
        without a success in between for `give_up_after` seconds (a slow database is waited
        for, a gone one is not); answers how many items are still unwritten (0 once
        drained)."""
        loop = asyncio.get_running_loop()
        joined = asyncio.ensure_future(self._items.join())
        try:
            while not joined.done():
                await asyncio.wait({joined}, timeout=give_up_after / 4)
                failing_since = self._failing_since
                if failing_since is not None and loop.time() - failing_since >= give_up_after:
                    return self._items.qsize() + len(self._writing)
            return 0
        finally:
            joined.cancel()

    async def run(self) -> None:
        """Write batches until cancelled."""
        failures = FailureWindow(log, "writing call events")
        while True:
            batch = [await self._items.get()]
            await asyncio.sleep(LINGER_SECONDS)
            while len(batch) < WRITE_BATCH and not self._items.empty():
                batch.append(self._items.get_nowait())
            self._writing = batch
            try:
                await self._write(batch)
            except Exception as exc:
                failures.failed(exc)  # and retried: an event is never dropped
                if self._failing_since is None:
                    self._failing_since = asyncio.get_running_loop().time()
                self._writing = []  # back in the queue, counted there
                for item in batch:
                    self._items.put_nowait(item)
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
            else:
                failures.succeeded()
                self._failing_since = None
            finally:
                self._writing = []
                for _ in batch:
                    self._items.task_done()

    async def _write(self, batch: list[Item]) -> None:
        placed = [(p.attempt_id, p.provider_call_id, p.at) for p in batch if isinstance(p, Placed)]
        withdrawn = [w.attempt_id for w in batch if isinstance(w, Withdrawn)]
        events = [e for e in batch if isinstance(e, CallEvent)]
        async with self.sessionmaker() as session, session.begin():
            settled = await record_call_events(session, events=events, placed=placed)
            late = await attempts_by_id(session, attempt_ids=withdrawn)
            await withdraw_attempts(session, attempts=late)
        report_settled(settled)
        self.live.ended(e.attempt_id for e in events if e.kind == "ended")
