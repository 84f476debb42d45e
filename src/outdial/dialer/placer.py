"""The placer: hands each claimed dial to the provider when its pacing slot comes, from one
loop over a heap of slots rather than a sleeping task per dial."""

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outdial import observability as obs
from outdial.db import utcnow
from outdial.dialer.attempts import NewAttempt, attempts_by_id, withdraw_attempts
from outdial.dialer.breaker import Backoff, CircuitBreaker
from outdial.dialer.capacity import PlacingCapacity
from outdial.dialer.claim import ClaimedJob
from outdial.dialer.live import LiveCalls
from outdial.dialer.pacing import SLOT_MARGIN, SLOT_SLACK_SECONDS
from outdial.dialer.policy import DialPolicy
from outdial.dialer.reslot import Missed, reslot
from outdial.dialer.writer import EventWriter, Placed, Withdrawn
from outdial.telephony.base import (
    CarrierUnreachable,
    DialRequest,
    RoomTarget,
    StreamTarget,
    TelephonyProvider,
)

log = logging.getLogger("outdial.dialer")

MAX_DIAL_LATENESS = SLOT_SLACK_SECONDS * 0.9
PLACER_TICK = 0.01
"""The placer wakes at least this often while dials wait for their slots, so a dial that
joins ahead of the earliest one waits at most this long past its slot."""

MAX_RESLOTS = 3
"""A dial that misses this many slots in a row goes back to the queue: the dialer is too
far behind to keep any slot, and another dialer may be free."""
RESLOT_LEAD = 0.02
"""A re-slot's first slot lies at least this far ahead (its transaction is a handful of
statements; it learns from there how long they take)."""

Reconcile = Callable[[list[str], Backoff], Awaitable[None]]


@dataclass(slots=True)
class _Dial:
    request: DialRequest
    job: ClaimedJob
    calls_per_second: float
    first_slot: float
    """Its claim judged the window up to this plus SLOT_MARGIN: a new slot stays inside."""
    misses: int = 0


class Placer:
    """Dials waiting for their slots, and the loop that places them. A dial not yet handed to
    the provider can be taken back (`hand_back`); once handed over it is the provider's."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        provider: TelephonyProvider,
        writer: EventWriter,
        live: LiveCalls,
        *,
        reconcile: Reconcile,
        capacity: PlacingCapacity,
        backoff: Backoff,
        breaker: CircuitBreaker,
        dialer_id: str,
        lease: timedelta,
        horizon: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.provider = provider
        self.writer = writer
        self.live = live
        self.reconcile = reconcile
        self.capacity = capacity
        self.backoff = backoff
        """How long a job whose dial the provider never received waits to be dialed again."""
        self.breaker = breaker
        """Told whether the provider took each dial."""
        self.dialer_id = dialer_id
        self.lease = lease
        self.horizon = horizon
        # A heap by slot time, and the attempts still in it (handing one back just forgets
        # it here; the loop then skips it).
        self._slots: list[tuple[float, int, _Dial]] = []
        self._order = itertools.count()
        self._waiting: set[str] = set()
        self._added = asyncio.Event()
        self._handing_over: set[asyncio.Task[None]] = set()
        self._missed: list[_Dial] = []
        self._reslotting: asyncio.Task[None] | None = None
        self._reslot_lag = RESLOT_LEAD

    def schedule(
        self,
        attempt: NewAttempt,
        policy: DialPolicy,
        *,
        stream: StreamTarget | None,
        room: RoomTarget | None = None,
    ) -> None:
        """Place this committed attempt at its dial slot; once answered, its call is
        connected to `stream` (the agent's), if it has one. `room`: the room it joins, for a
        provider whose calls are rooms."""
        request = DialRequest(
            attempt_id=attempt.id,
            to=attempt.job.to_number,
            from_number=attempt.job.from_number,
            ring_timeout_seconds=policy.ring_timeout_seconds,
            voicemail_behavior=policy.voicemail_behavior,
            stream=stream,
            room=room,
        )
        slot = attempt.dial_at.timestamp()
        self._push(slot, _Dial(request, attempt.job, attempt.calls_per_second, slot))

    def _push(self, slot: float, dial: _Dial) -> None:
        heapq.heappush(self._slots, (slot, next(self._order), dial))
        self._waiting.add(dial.request.attempt_id)
        self._added.set()

    @property
    def in_hand(self) -> int:
        """Dials waiting for their slots (or for new ones) or for the provider to take them."""
        return len(self._waiting) + len(self._handing_over)

    async def hand_back(self, attempt_ids: Iterable[str] | None = None) -> None:
        """Take back dials not yet handed to the provider (all, or these) and withdraw them:
        their jobs are due again (or canceled, if their call was ended meanwhile)."""
        wanted = list(self._waiting) if attempt_ids is None else attempt_ids
        ids = [a for a in wanted if a in self._waiting]
        self._waiting.difference_update(ids)
        if ids:
            async with self.sessionmaker() as session, session.begin():
                orphans = await attempts_by_id(session, attempt_ids=ids)
                await withdraw_attempts(session, attempts=orphans)

    async def run(self) -> None:
        """Place due dials until cancelled."""
        while True:
            try:
                self._place_due(time.time())
            except Exception:
                # Nothing else would ever place the waiting dials: log, and keep going.
                log.exception("placing due dials failed")
            if not self._slots:
                self._added.clear()
                await self._added.wait()
                continue
            await asyncio.sleep(min(max(self._slots[0][0] - time.time(), 0), PLACER_TICK))

    def _place_due(self, now: float) -> None:
        while self._slots and self._slots[0][0] <= now:
            slot, _, dial = heapq.heappop(self._slots)
            if dial.request.attempt_id not in self._waiting:
                continue  # handed back meanwhile
            # From here the attempt is the provider's (unless it turns out too late): shutdown
            # no longer hands it back.
            self._waiting.discard(dial.request.attempt_id)
            self.live.started(dial.request.attempt_id)
            task = asyncio.create_task(self._hand_to_provider(dial, slot))
            self._handing_over.add(task)
            task.add_done_callback(self._handing_over.discard)

    def _reslot_later(self, dial: _Dial) -> None:
        # Waiting again (shutdown hands it back) while a new slot is found for it.
        self._waiting.add(dial.request.attempt_id)
        self._missed.append(dial)
        if self._reslotting is None or self._reslotting.done():
            self._reslotting = asyncio.create_task(self._reslot_missed())

    async def _reslot_missed(self) -> None:
        """Give the dials that missed their slots new ones, in one transaction per gathering;
        those that get none are withdrawn (their jobs are due again)."""
        while self._missed:
            await asyncio.sleep(0)  # the other dials late with these
            missed, self._missed = self._missed, []
            missed = [d for d in missed if d.request.attempt_id in self._waiting]
            if not missed:
                continue
            started = time.monotonic()
            now = time.time() + self._reslot_lag * 1.5
            # No new slot later than the earliest claim's judgement of the window reaches.
            reach = min(d.first_slot for d in missed) + SLOT_MARGIN - SLOT_SLACK_SECONDS
            horizon = min(self.horizon, reach - now)
            try:
                async with self.sessionmaker() as session, session.begin():
                    got = await reslot(
                        session,
                        missed=[
                            Missed(d.request.attempt_id, d.job, d.calls_per_second) for d in missed
                        ],
                        dialer_id=self.dialer_id,
                        lease_until=utcnow() + self.lease,
                        now=now,
                        horizon=horizon,
                        cursor=self.capacity.cursor,
                        dials_per_second=self.capacity.per_second,
                    )
            except Exception:
                log.exception("re-slotting %d missed dials failed; withdrawing them", len(missed))
                got = None
            self._reslot_lag += (time.monotonic() - started - self._reslot_lag) / 4
            if got is not None:
                self.capacity.cursor = got.cursor
            for dial in missed:
                attempt_id = dial.request.attempt_id
                if attempt_id not in self._waiting:
                    continue  # handed back meanwhile (shutdown): withdrawn there
                if got is not None and attempt_id in got.slots:
                    self._waiting.discard(attempt_id)  # _push adds it again
                    self._push(got.slots[attempt_id], dial)
                else:
                    self._waiting.discard(attempt_id)
                    await self.writer.put(Withdrawn(attempt_id))

    async def _hand_to_provider(self, dial: _Dial, slot: float) -> None:
        request, job = dial.request, dial.job
        # Judged at the last moment before the provider hears of it: a pause, and pacing,
        # count on no dial starting later than its slot plus the slack.
        late = time.time() - slot
        self.capacity.placed(late)
        if late > MAX_DIAL_LATENESS:
            # Placed now it would crowd the caller ID's next slot, which another dialer may
            # hold: pacing holds across dialers only if every dial keeps to its slot.
            self.live.ended([request.attempt_id])
            dial.misses += 1
            if dial.misses >= MAX_RESLOTS:
                log.info("%s missed its dial slot by %.3f s; handed back", request.attempt_id, late)
                await self.writer.put(Withdrawn(request.attempt_id))
                return
            log.info("%s missed its dial slot by %.3f s; re-slotted", request.attempt_id, late)
            self._reslot_later(dial)
            return
        try:
            provider_call_id = await self.provider.place(request)
        except CarrierUnreachable as exc:
            # Not dialed: withdrawn, its job waits. The breaker's log says the carrier is down.
            log.debug("the carrier never took %s: %s", request.attempt_id, exc)
            self.breaker.dial_not_taken(str(exc))
            await self.reconcile([request.attempt_id], self.backoff)
            return
        except Exception:
            log.exception(
                "placing %s failed; asking the provider what happened", request.attempt_id
            )
            await self.reconcile([request.attempt_id], self.backoff)
            return
        self.breaker.dial_taken()
        await self.writer.put(Placed(request.attempt_id, provider_call_id, utcnow()))
        obs.dial_placed(
            due_at=job.run_at,
            tenant_id=job.tenant_id,
            call_id=job.call_id,
            participant_id=job.participant_id,
            attempt_id=request.attempt_id,
        )
