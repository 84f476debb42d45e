"""The state machines of dial jobs and dial attempts, with the transitions each allows."""

from enum import StrEnum


class JobStatus(StrEnum):
    """A queue entry: waiting ⇄ active (claimed by a dialer), then final."""

    WAITING = "waiting"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


UNFINISHED_JOB = frozenset({JobStatus.WAITING, JobStatus.ACTIVE})

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # Claimed; or canceled while it waits (its call ended, its campaign deleted).
    JobStatus.WAITING: frozenset({JobStatus.ACTIVE, JobStatus.CANCELED}),
    # Handed back (not dialed after all, a retry, an attempt never received), or settled.
    JobStatus.ACTIVE: frozenset(
        {JobStatus.WAITING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


class AttemptStatus(StrEnum):
    """One dial: committed (placing) → placed → answered → ended; `lost` when its fate could
    not be learnt after a crash. An attempt the provider never received is deleted."""

    PLACING = "placing"
    PLACED = "placed"
    ANSWERED = "answered"
    ENDED = "ended"
    LOST = "lost"


IN_FLIGHT = frozenset({AttemptStatus.PLACING, AttemptStatus.PLACED, AttemptStatus.ANSWERED})

ATTEMPT_TRANSITIONS: dict[AttemptStatus, frozenset[AttemptStatus]] = {
    AttemptStatus.PLACING: frozenset(
        {AttemptStatus.PLACED, AttemptStatus.ANSWERED, AttemptStatus.ENDED, AttemptStatus.LOST}
    ),
    AttemptStatus.PLACED: frozenset(
        {AttemptStatus.ANSWERED, AttemptStatus.ENDED, AttemptStatus.LOST}
    ),
    AttemptStatus.ANSWERED: frozenset({AttemptStatus.ENDED, AttemptStatus.LOST}),
    AttemptStatus.ENDED: frozenset(),
    AttemptStatus.LOST: frozenset(),
}
