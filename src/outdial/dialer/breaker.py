"""What the dialer does when its carrier does not take calls (the provider's `place` raised
CarrierUnreachable: the number was not dialed). The job waits, longer each time (`Backoff`),
and after enough such dials in a row the dialer stops claiming work for the provider until it
takes a dial again (`CircuitBreaker`). Jobs are never failed for the carrier's sake.

Pure: no I/O and no state outside these objects; the dialer wires them (worker.py: the claim
loop asks the breaker; placer.py: tells it what became of each dial), and the observability
package reports the breaker's changes (logs, outdial_provider_circuit_open)."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a job waits after a dial of it the carrier never took: the first such dial
    `delays[0]`, the second `delays[1]`…, the last delay repeating (the cap)."""

    delays: tuple[timedelta, ...]

    def __post_init__(self) -> None:
        if not self.delays or min(self.delays) <= timedelta(0):
            raise ValueError("a backoff needs at least one delay, each above zero")

    @classmethod
    def of_seconds(cls, seconds: Sequence[float]) -> "Backoff":
        return cls(tuple(timedelta(seconds=s) for s in seconds))

    def after(self, earlier: int) -> timedelta:
        """The wait after a dial the carrier never took, when `earlier` dials of the same
        job went the same way before it."""
        return self.delays[min(earlier, len(self.delays) - 1)]


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Dialing as usual."""
    OPEN = "open"
    """The provider is down: nothing new is claimed until the cool-down has passed."""
    HALF_OPEN = "half_open"
    """Probing: one dial at a time, and only while no other dial is in hand."""


OnChange = Callable[[BreakerState, BreakerState, str], None]
"""Told of each change of state: (previous, new, why)."""


def _ignore(previous: BreakerState, state: BreakerState, why: str) -> None:
    return None


class CircuitBreaker:
    """One provider's circuit breaker: closed → open after `failures_to_open` dials in a row
    the carrier never took; open → half-open once `cool_down` seconds have passed; half-open
    allows one probe dial at a time; a dial the carrier takes closes it (from any state), a
    probe it does not take opens it again for another cool-down. Dials the carrier did not
    take while the breaker was already open (placed before it opened) change nothing."""

    def __init__(
        self,
        *,
        failures_to_open: int,
        cool_down: float,
        on_change: OnChange = _ignore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures_to_open < 1 or cool_down <= 0:
            raise ValueError("a breaker opens after at least one failure, for some time")
        self.failures_to_open = failures_to_open
        self.cool_down = cool_down
        self.on_change = on_change
        self.clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0

    def claim_limit(self, *, dials_in_hand: int) -> int | None:
        """How many jobs the dialer may claim now: None (no limit of the breaker's), 0, or 1
        (a probe, when half-open and none of the dialer's dials is still waiting for its slot
        or for the provider's answer)."""
        if self.state is BreakerState.OPEN and self.clock() >= self._opened_at + self.cool_down:
            self._change(BreakerState.HALF_OPEN, f"{self.cool_down:g} s passed: probing")
        if self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.OPEN:
            return 0
        return 1 if dials_in_hand == 0 else 0

    def dial_taken(self) -> None:
        """The carrier took a dial: it is up."""
        self._failures = 0
        if self.state is not BreakerState.CLOSED:
            self._change(BreakerState.CLOSED, "the carrier took a dial")

    def dial_not_taken(self, why: str) -> None:
        """The carrier never took a dial (`why`: what the provider said)."""
        if self.state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failures_to_open:
                self._open(f"{self._failures} dials in a row were not taken (last: {why})")
        elif self.state is BreakerState.HALF_OPEN:
            self._open(f"the probe dial was not taken: {why}")

    def _open(self, why: str) -> None:
        self._opened_at = self.clock()
        self._failures = 0
        self._change(BreakerState.OPEN, why)

    def _change(self, state: BreakerState, why: str) -> None:
        previous, self.state = self.state, state
        self.on_change(previous, state, why)
