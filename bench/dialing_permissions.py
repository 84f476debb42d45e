"""Benchmark: the dialing-permission check for a 500-number batch, against the yardstick of
asking libphonenumber directly (parse, region, type) for every number.

Three kinds of batch: the batch API benchmark's +1555 numbers (one settling prefix), random
US numbers (about 7,000 settling prefixes in all), and random numbers of 40 countries. Each
batch is timed cold (caches emptied), then on a second pass (where blocks seen before get
their settling prefix worked out) and a third (from the cache); and new numbers are timed
after 50 batches of warm-up. Run: `.venv/bin/python bench/dialing_permissions.py`.
"""

import random
import statistics
import time
from collections.abc import Callable

import phonenumbers
from phonenumbers import PhoneNumberType

from outdial.permissions import destinations
from outdial.permissions.destinations import Permissions, refusals
from outdial.phones import InvalidPhoneNumber, to_e164

BATCH = 500
PERMISSIONS = Permissions(countries=frozenset({"US", "GB"}))


def test_range(rng: random.Random) -> list[str]:
    start = rng.randrange(9_000_000)
    return [f"+1555{start + n:07d}" for n in range(BATCH)]


def us_numbers(rng: random.Random) -> list[str]:
    return [
        f"+1{rng.randint(201, 989)}{rng.randint(2, 9)}{rng.randrange(1_000_000):06d}"
        for _ in range(BATCH)
    ]


COUNTRIES = sorted(phonenumbers.SUPPORTED_REGIONS)[::6][:40]


def world_numbers(rng: random.Random) -> list[str]:
    found: list[str] = []
    while len(found) < BATCH:
        region = rng.choice(COUNTRIES)
        kind = rng.choice([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE])
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        tail = "".join(rng.choice("0123456789") for _ in range(4))
        try:
            found.append(to_e164(digits[:-4] + tail))
        except InvalidPhoneNumber:
            pass
    return found


def yardstick(numbers: list[str]) -> None:
    for number in numbers:
        parsed = phonenumbers.parse(number, None)
        phonenumbers.region_code_for_number(parsed)
        phonenumbers.number_type(parsed)


def check(numbers: list[str]) -> None:
    refusals(numbers, PERMISSIONS)


def timed(work: Callable[[list[str]], None], numbers: list[str]) -> float:
    started = time.perf_counter()
    work(numbers)
    return (time.perf_counter() - started) * 1000


def empty_caches() -> None:
    destinations._settled.clear()
    destinations._prefix_sizes.clear()
    destinations._sighted.clear()
    destinations._settlement.cache_clear()


def main() -> None:
    print(
        f"{BATCH} numbers a batch, ms (median of 20 batches); in brackets the ratio to asking "
        "libphonenumber directly for each number"
    )
    kinds = (("+1555 test range", test_range), ("US", us_numbers), ("40 countries", world_numbers))
    for name, make in kinds:
        rng = random.Random(7)
        batches = [make(rng) for _ in range(20)]
        base = statistics.median(timed(yardstick, b) for b in batches)
        passes: list[list[float]] = [[], [], []]
        for numbers in batches:
            empty_caches()
            for times in passes:
                times.append(timed(check, numbers))
        empty_caches()
        for _ in range(50):
            check(make(rng))
        fresh = statistics.median(timed(check, make(rng)) for _ in range(20))
        first, second, third = (statistics.median(t) for t in passes)
        print(
            f"{name:>16}: libphonenumber {base:6.2f} | cold {first:6.2f} ({first / base:4.2f}) "
            f"| 2nd pass {second:6.2f} ({second / base:4.2f}) | 3rd pass {third:5.2f} "
            f"({third / base:4.2f}) | new numbers after 50 batches {fresh:5.2f} "
            f"({fresh / base:4.2f})"
        )


if __name__ == "__main__":
    main()
