"""One 20 ms clock for every call of a process: each tick, every subscribed call sends its next
packet. A timer per call would cost a wake-up per call per packet; one clock costs one wake-up
per tick however many calls there are, and keeps their packets evenly spaced."""

import asyncio
import logging
import weakref
from collections.abc import Callable

from outdial.telephony.media.g711 import FRAME_MS

log = logging.getLogger(__name__)

TICK_SECONDS = FRAME_MS / 1000
MAX_CATCH_UP_TICKS = 5
"""A loop that stalled for up to this many ticks makes them up (each call sends the packets it
owes, keeping its timestamps and the far end's buffer whole); after a longer stall the clock
starts afresh from now (the far end hears the gap)."""

Tick = Callable[[], None]

_clocks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PacketClock]" = (
    weakref.WeakKeyDictionary()
)


class PacketClock:
    """Calls `tick()` of every subscriber every 20 ms, on an absolute schedule (a late tick
    does not push the next ones back). Runs only while it has subscribers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._subscribers: dict[object, Tick] = {}
        self._next_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.ticks = 0
        self.late_ticks = 0
        """Ticks that ran more than a quarter tick late (for benchmarks)."""

    @classmethod
    def of_running_loop(cls) -> "PacketClock":
        """The clock shared by every call of this event loop."""
        loop = asyncio.get_running_loop()
        clock = _clocks.get(loop)
        if clock is None:
            clock = _clocks[loop] = cls(loop)
        return clock

    def subscribe(self, key: object, tick: Tick) -> None:
        """Call `tick` from the next tick on, until `unsubscribe(key)`."""
        self._subscribers[key] = tick
        if self._timer is None:
            self._next_at = self.loop.time() + TICK_SECONDS
            self._timer = self.loop.call_at(self._next_at, self._run)

    def unsubscribe(self, key: object) -> None:
        """Stop calling `key`'s tick; the clock stops with its last subscriber."""
        self._subscribers.pop(key, None)
        if not self._subscribers and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _run(self) -> None:
        assert self._next_at is not None
        now = self.loop.time()
        due = int((now - self._next_at) / TICK_SECONDS) + 1
        if due > MAX_CATCH_UP_TICKS:
            log.warning("media clock stalled %.0f ms; starting afresh", (now - self._next_at) * 1e3)
            self._next_at, due = now, 1
        if now - self._next_at > TICK_SECONDS / 4:
            self.late_ticks += 1
        for _ in range(due):
            self._tick_all()
        self._next_at += due * TICK_SECONDS
        if self._subscribers:
            self._timer = self.loop.call_at(self._next_at, self._run)
        else:
            self._timer = None

    def _tick_all(self) -> None:
        self.ticks += 1
        subscribers = self._subscribers
        # A copy of the keys alone: one object, not a tuple per call 50 times a second (each
        # one the cyclic garbage collector counts, and hundreds alive at once set it off).
        for key in list(subscribers):
            tick = subscribers.get(key)
            if tick is None:
                continue  # unsubscribed by an earlier call's tick
            try:
                tick()
            except Exception:
                log.exception("media tick of %r failed; it is dropped from the clock", key)
                subscribers.pop(key, None)
