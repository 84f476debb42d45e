"""How many dials a second this dialer can place on time, learnt as it goes.

A dial placed later than its slot plus the pacing slack is handed back (pacing across
dialers counts on every dial keeping to its slot), and a hand-back costs a withdrawal and a
second claim. So a dialer claims no more than it can place on time: its claims' slots are
laid on its own schedule at this rate (pacing.reserve_slots), and it books no more than
`LOOKAHEAD` seconds of that schedule ahead. The capacity follows the lateness of its own
dials (multiplicative increase and decrease, as TCP's congestion control finds a link's
rate): down when dials start running late, up while claims are held back by it and dials
are on time."""

import time

INITIAL_PER_SECOND = 2000.0
FLOOR_PER_SECOND = 100.0
CEILING_PER_SECOND = 50_000.0
LOOKAHEAD = 0.5
"""Seconds of dials a dialer holds claimed, at its capacity: enough to keep the placer busy
between claims, short enough that a pause or a shutdown hands little back."""
RUNNING_LATE = 0.05
"""A dial this late (seconds past its slot; handed back past 0.09) says the dialer is taking
on too much. Lower, it would mistake a busy machine's scheduling jitter for overload."""
CLAIM_EVERY = 0.1
"""A dialer claims when at least this much of its schedule is free (so a claim, which costs
a dozen statements whatever its size, takes a tenth of a second of dials, not a handful)."""
ADJUST_EVERY = 0.25
DECREASE = 0.8
INCREASE = 1.25


class PlacingCapacity:
    """The dials a second this process places on time (see the module's docstring)."""

    def __init__(self, initial: float = INITIAL_PER_SECOND) -> None:
        self.per_second = initial
        self.cursor = 0.0
        """Where this dialer's schedule of dials ends (epoch seconds): the slots of its next
        claim, or of a re-slot, start no sooner."""
        self._late = False
        self._held_back = False
        self._window_started = time.monotonic()

    def room(self) -> int:
        """How many more dials a claim may take, with this dialer's schedule booked up to
        `cursor`."""
        self._adjust()
        free = LOOKAHEAD - max(self.cursor - time.time(), 0.0)
        if free < CLAIM_EVERY:
            self._held_back = True
            return 0
        return int(self.per_second * free)

    def placed(self, lateness: float) -> None:
        """A dial reached the provider `lateness` seconds after its slot."""
        if lateness > RUNNING_LATE and not self._late:
            self._late = True
            self.per_second = max(FLOOR_PER_SECOND, self.per_second * DECREASE)

    def _adjust(self) -> None:
        now = time.monotonic()
        if now - self._window_started < ADJUST_EVERY:
            return
        if not self._late and self._held_back:
            self.per_second = min(CEILING_PER_SECOND, self.per_second * INCREASE)
        self._late = self._held_back = False
        self._window_started = now
