"""Per caller-ID pacing shared by every dialer: dial slots reserved in the `caller_pacing` rows."""

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from outdial.db import (
    TEXT,
    insert_ignoring_conflicts,
    one_of,
    update_rows,
)
from outdial.dialer.models import CallerPacing

SLOT_SLACK_SECONDS = 0.1
"""Slots are spaced (1 + slack) / cps apart, so a dial up to `slack` seconds late never puts
more than cps dials in any one-second window: (1 + slack) / spacing = cps. A dialer's event
loop runs behind by up to ~0.1 s under full load (measured with bench/dialer.py), and a dial
later than that is handed back rather than placed; the price is dialing each caller ID at
1/1.1 of its configured rate."""

SLOT_MARGIN = 2.0
"""Beyond the pacing horizon, how much later than its claim a dial may still be placed: the
claim's own time before its slots are reserved, a slot's slack, and a missed slot's new one
(the placer's re-slot keeps within its first slot plus this). A claim judges the calling
window and state hours up to then."""

MIN_DIAL_SPACING_SECONDS = 0.0002
"""No caller ID is dialed more densely than this (5,000 dials/s), whatever its rate."""


@dataclass(slots=True)
class Reservation:
    """Slots reserved by one claim: per caller ID, and where this dialer's own schedule now
    ends (`cursor`: its next claim's slots start no earlier)."""

    slots: dict[str, list[float]]
    cursor: float


async def reserve_slots(
    session: AsyncSession,
    *,
    wanted: dict[str, int],
    calls_per_second: dict[str, float],
    now: float,
    horizon: float,
    cursor: float,
    dials_per_second: float,
) -> Reservation:
    """Reserve dial instants (epoch seconds) for several caller IDs at once: up to
    `wanted[number]` each, spaced so that no one-second window ever holds more than
    `calls_per_second[number]` dials of that number, none later than `now + horizon`. Shared
    by all dialers through the `caller_pacing` rows (each holds where its caller ID's free
    time begins), locked in one order (no deadlocks); three statements whatever the number of
    caller IDs.

    Each caller ID's slots are a dense block at its own pace; the blocks are laid one after
    another on this dialer's schedule (from `cursor`, at `dials_per_second` overall), caller
    IDs free soonest first. So a dialer never reserves more than it can place on time, and
    dialers sharing caller IDs dial them side by side: each takes the ones free now, none has
    to wait for another's reservations to run out."""
    if not wanted:
        return Reservation({}, cursor)
    numbers = sorted(wanted)
    await session.execute(
        insert_ignoring_conflicts(session, CallerPacing),
        [{"from_number": n, "next_slot_at": 0.0} for n in numbers],
    )
    rows = await session.execute(
        select(CallerPacing.from_number, CallerPacing.next_slot_at)
        .where(one_of(session, CallerPacing.from_number, numbers))
        .order_by(CallerPacing.from_number)
        .with_for_update()
    )
    free_from = {number: max(next_slot or 0.0, now) for number, next_slot in rows}
    cursor = max(cursor, now)
    slots: dict[str, list[float]] = {}
    moved: list[dict[str, Any]] = []
    for number in sorted(free_from, key=free_from.__getitem__):
        interval = max(
            (1.0 + SLOT_SLACK_SECONDS) / calls_per_second[number],
            MIN_DIAL_SPACING_SECONDS,
            1.0 / dials_per_second,
        )
        start = max(free_from[number], cursor)
        fits = math.floor((now + horizon - start) / interval) + 1 if start <= now + horizon else 0
        taken = max(0, min(wanted[number], fits))
        slots[number] = [start + i * interval for i in range(taken)]
        if taken:
            moved.append({"number": number, "next": start + taken * interval})
            cursor = start + taken / dials_per_second
    pacing = CallerPacing.__table__
    await update_rows(
        session,
        pacing,
        moved,
        fields={"number": TEXT, "next": pacing.c.next_slot_at.type},
        where=lambda row: pacing.c.from_number == row.number,
        values=lambda row: {"next_slot_at": row.next},
    )
    return Reservation(slots, cursor)
