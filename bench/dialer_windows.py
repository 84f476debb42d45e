"""Benchmark: `next_allowed_at` per call, window open and closed, with state rules where a row
says so.

Run: `.venv/bin/python bench/dialer_windows.py`. The dialer calls it for every job it claims.
"warm": the steady state, the number's zones and the day's intervals cached. "new number": the
number's zone lookup is not cached (a contact seen for the first time). "new day": the
intervals are not cached (the first job of a UTC day for that window and set of zones).
"""

import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from outdial.calls.schemas import CallingWindow
from outdial.dialer import state_rules, windows

CASES = [
    ("+1555 -> fallback (1 zone)", "+15551234567", False),
    ("+1775 Nevada (2 zones)", "+17755551234", False),
    ("+1800 toll-free (42 zones)", "+18005551234", False),
    ("+1555, state rules", "+15551234567", True),
    ("+1850 Florida, state rules", "+18505551234", True),
]
OPEN = datetime(2024, 7, 10, 22, 30, tzinfo=UTC)  # 08:30 Guam, 11:30 Pago Pago, 15:30 Pacific
CLOSED = datetime(2024, 7, 10, 6, 0, tzinfo=UTC)  # before 08:00 in all of them
NEW_NUMBER: tuple[Any, ...] = (windows._number_zones, windows._judged, state_rules.state_of)
NEW_DAY: tuple[Any, ...] = (windows._allowed, windows._rules_allowed, windows._zone_allowed)


def per_call_us(call: Callable[[], object], clear: tuple[Any, ...]) -> float:
    def run() -> None:
        for cache in clear:
            cache.cache_clear()
        call()

    number = 500 if clear else 20_000
    return min(timeit.repeat(run, number=number, repeat=5)) / number * 1e6


def main() -> None:
    window = CallingWindow(fallback_timezone="America/Los_Angeles")
    columns = [("warm", ()), ("new number", NEW_NUMBER), ("new day", NEW_DAY)]
    print(
        f"{'us per call':28}"
        + "".join(f"{c + ' ' + n:>20}" for c, _ in columns for n in ("open", "closed"))
    )
    for label, number, rules in CASES:
        cells = []
        for _, clear in columns:
            for now in (OPEN, CLOSED):

                def call(now: datetime = now, number: str = number, rules: bool = rules) -> object:
                    return windows.next_allowed_at(
                        window, number=number, contact_timezone=None, now=now, state_rules=rules
                    )

                cells.append(f"{per_call_us(call, clear):>20.1f}")
        print(f"{label:28}" + "".join(cells))


if __name__ == "__main__":
    main()
