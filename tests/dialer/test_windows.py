"""Calling windows: zones of a number, DST, midnight spans, and properties against an oracle.

The oracle (`inside`) reads the recipient's wall clock with plain datetime calls, independent
of the interval arithmetic in `outdial.dialer.windows`."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.calls.schemas import ALL_DAYS, CallingWindow
from outdial.dialer.windows import HORIZON, candidate_zones, next_allowed_at

TEST_NUMBER = "+15551234567"  # libphonenumber: Etc/Unknown
NEVADA = "+17755551234"  # America/Boise and America/Los_Angeles
MANHATTAN = "+12125551234"  # America/New_York
TOLL_FREE = "+18005551234"  # every NANP zone, Guam to Pago Pago
NY, LONDON = ZoneInfo("America/New_York"), ZoneInfo("Europe/London")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def at(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


def clock(hhmm: str) -> time:
    return time(int(hhmm[:2]), int(hhmm[3:]))


def inside(window: CallingWindow, zone: ZoneInfo, instant: datetime) -> bool:
    local = instant.astimezone(zone)
    start, end = clock(window.start), clock(window.end)
    today = ALL_DAYS[local.weekday()] in window.days
    yesterday = ALL_DAYS[(local.weekday() - 1) % 7] in window.days
    now = local.time()
    if start < end:
        return today and start <= now < end
    return (today and now >= start) or (yesterday and now < end)


def inside_all(window: CallingWindow, zones: tuple[ZoneInfo, ...], instant: datetime) -> bool:
    return all(inside(window, zone, instant) for zone in zones)


def nxt(
    window: CallingWindow, now: datetime, number: str = TEST_NUMBER, contact: str | None = None
):
    return next_allowed_at(window, number=number, contact_timezone=contact, now=now)


# -- zones ------------------------------------------------------------------------------------


def test_unknown_zone_falls_back() -> None:
    window = CallingWindow(fallback_timezone="America/Chicago")
    chicago = ZoneInfo("America/Chicago")
    assert candidate_zones(window, number=TEST_NUMBER, contact_timezone=None) == (chicago,)
    assert nxt(window, at(chicago, 2024, 7, 10, 7, 30)) == at(chicago, 2024, 7, 10, 8, 0)
    assert candidate_zones(CallingWindow(), number=TEST_NUMBER, contact_timezone=None) == (
        ZoneInfo("UTC"),
    )


def test_number_spanning_zones_must_be_inside_in_every_one() -> None:
    window = CallingWindow()
    zones = candidate_zones(window, number=NEVADA, contact_timezone=None)
    assert set(zones) == {ZoneInfo("America/Boise"), ZoneInfo("America/Los_Angeles")}
    pacific = ZoneInfo("America/Los_Angeles")
    # 07:30 Pacific is 08:30 Mountain: open in Boise only.
    assert nxt(window, at(pacific, 2024, 7, 10, 7, 30), NEVADA) == at(pacific, 2024, 7, 10, 8, 0)
    # 20:30 Pacific is 21:30 Mountain: closed in Boise, so the next Pacific morning.
    assert nxt(window, at(pacific, 2024, 7, 10, 20, 30), NEVADA) == at(pacific, 2024, 7, 11, 8)
    noon = at(pacific, 2024, 7, 10, 12, 0)
    assert nxt(window, noon, NEVADA) == noon


def test_toll_free_number_waits_for_the_slot_open_in_all_nanp_zones() -> None:
    window = CallingWindow()
    zones = candidate_zones(window, number=TOLL_FREE, contact_timezone=None)
    assert {ZoneInfo("Pacific/Guam"), ZoneInfo("Pacific/Pago_Pago"), NY} <= set(zones)
    # Guam (UTC+10) and Pago Pago (UTC-11) are 3 hours apart on the clock, a day apart on the
    # calendar: 22:00 UTC is 08:00 in Guam and 11:00 in Pago Pago.
    result = nxt(window, utc(2024, 7, 9, 15, 30), TOLL_FREE)
    assert result == utc(2024, 7, 9, 22, 0)
    assert inside_all(window, zones, result)
    assert not inside_all(window, zones, result - timedelta(microseconds=1))
    # With a single day allowed, Guam's Monday morning is Pago Pago's Sunday: never.
    assert nxt(CallingWindow(days=["mon"]), utc(2024, 7, 9, 15, 30), TOLL_FREE) is None


def test_contact_timezone_overrides_the_numbers_zones() -> None:
    window = CallingWindow()
    now = at(NY, 2024, 7, 10, 9, 0)  # 06:00 in Los Angeles
    assert nxt(window, now, MANHATTAN) == now
    assert nxt(window, now, MANHATTAN, "America/Los_Angeles") == utc(2024, 7, 10, 15, 0)
    # A blank CSV cell is no time zone.
    assert nxt(window, now, MANHATTAN, "") == now


def test_explicit_window_timezone_wins() -> None:
    window = CallingWindow(timezone="Asia/Tokyo")
    tokyo = ZoneInfo("Asia/Tokyo")
    got = candidate_zones(window, number=MANHATTAN, contact_timezone="America/Los_Angeles")
    assert got == (tokyo,)
    now = at(NY, 2024, 7, 10, 12, 0)  # 01:00 in Tokyo
    assert nxt(window, now, MANHATTAN, "America/Los_Angeles") == at(tokyo, 2024, 7, 11, 8, 0)


# -- days and midnight ------------------------------------------------------------------------


def test_weekend_excluded_waits_for_monday() -> None:
    window = CallingWindow(start="09:00", end="17:00", days=["mon", "tue", "wed", "thu", "fri"])
    monday_9 = at(NY, 2024, 7, 15, 9, 0)
    assert nxt(window, at(NY, 2024, 7, 13, 12, 0), MANHATTAN) == monday_9  # Saturday noon
    assert nxt(window, at(NY, 2024, 7, 12, 17, 0), MANHATTAN) == monday_9  # Friday at the end
    assert nxt(window, at(NY, 2024, 7, 12, 16, 59), MANHATTAN) == at(NY, 2024, 7, 12, 16, 59)


def test_window_spanning_midnight_belongs_to_the_day_it_starts() -> None:
    window = CallingWindow(start="21:00", end="08:00", days=["fri"], fallback_timezone="UTC")
    next_friday_night = utc(2024, 7, 19, 21, 0)
    assert nxt(window, utc(2024, 7, 12, 22, 0)) == utc(2024, 7, 12, 22, 0)  # Friday night
    assert nxt(window, utc(2024, 7, 13, 3, 0)) == utc(2024, 7, 13, 3, 0)  # ...into Saturday
    assert nxt(window, utc(2024, 7, 13, 8, 0)) == next_friday_night
    # Early Friday is Thursday's window, which is not allowed.
    assert nxt(window, utc(2024, 7, 12, 3, 0)) == utc(2024, 7, 12, 21, 0)


# -- DST --------------------------------------------------------------------------------------


def test_new_york_spring_forward() -> None:
    # 2024-03-10: 02:00 EST becomes 03:00 EDT at 07:00 UTC.
    default = CallingWindow(timezone="America/New_York")
    assert nxt(default, utc(2024, 3, 10, 6, 0)) == utc(2024, 3, 10, 12, 0)  # 08:00 EDT
    # A start in the skipped hour opens when the clock jumps past it, at 03:00 EDT.
    skipped_start = CallingWindow(start="02:30", end="05:00", timezone="America/New_York")
    assert nxt(skipped_start, utc(2024, 3, 10, 5, 0)) == utc(2024, 3, 10, 7, 0)
    # An end in the skipped hour closes at the jump.
    skipped_end = CallingWindow(start="22:00", end="02:30", timezone="America/New_York")
    assert nxt(skipped_end, utc(2024, 3, 10, 6, 59)) == utc(2024, 3, 10, 6, 59)
    assert nxt(skipped_end, utc(2024, 3, 10, 7, 0)) == at(NY, 2024, 3, 10, 22, 0)


def test_new_york_fall_back() -> None:
    # 2024-11-03: 02:00 EDT becomes 01:00 EST at 06:00 UTC; 01:00-01:59 happens twice.
    default = CallingWindow(timezone="America/New_York")
    assert nxt(default, utc(2024, 11, 3, 5, 0)) == utc(2024, 11, 3, 13, 0)  # 08:00 EST
    repeated = CallingWindow(start="01:30", end="03:00", timezone="America/New_York")
    first_0130, second_0130 = at(NY, 2024, 11, 3, 1, 30), at(NY, 2024, 11, 3, 1, 30, fold=1)
    assert (first_0130, second_0130) == (utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30))
    assert nxt(repeated, utc(2024, 11, 3, 5, 0)) == first_0130
    assert nxt(repeated, utc(2024, 11, 3, 5, 45)) == utc(2024, 11, 3, 5, 45)
    # The second 01:00-01:29 reads before the start again: closed until the second 01:30.
    assert nxt(repeated, utc(2024, 11, 3, 6, 0)) == second_0130


def test_london_spring_forward() -> None:
    # 2024-03-31: 01:00 GMT becomes 02:00 BST at 01:00 UTC.
    window = CallingWindow(start="01:15", end="06:00", timezone="Europe/London")
    assert nxt(window, utc(2024, 3, 31, 0, 30)) == utc(2024, 3, 31, 1, 0)
    default = CallingWindow(timezone="Europe/London")
    assert nxt(default, utc(2024, 3, 30, 23, 0)) == utc(2024, 3, 31, 7, 0)  # 08:00 BST
    assert nxt(default, utc(2024, 3, 30, 20, 59)) == utc(2024, 3, 30, 20, 59)  # 20:59 GMT


def test_london_fall_back() -> None:
    # 2024-10-27: 02:00 BST becomes 01:00 GMT at 01:00 UTC.
    window = CallingWindow(start="01:30", end="09:00", timezone="Europe/London")
    assert nxt(window, utc(2024, 10, 27, 0, 0)) == utc(2024, 10, 27, 0, 30)  # 01:30 BST
    assert nxt(window, utc(2024, 10, 27, 1, 5)) == utc(2024, 10, 27, 1, 30)  # 01:30 GMT
    assert nxt(window, utc(2024, 10, 27, 8, 59)) == utc(2024, 10, 27, 8, 59)
    default = CallingWindow(timezone="Europe/London")
    assert nxt(default, utc(2024, 10, 27, 2, 0)) == utc(2024, 10, 27, 8, 0)  # 08:00 GMT


# -- never, and the shape of the answer -------------------------------------------------------


def test_zones_whose_windows_never_overlap() -> None:
    # 09:00-10:00 Pacific and 09:00-10:00 Mountain only touch (at 10:00 Mountain), never overlap.
    window = CallingWindow(start="09:00", end="10:00")
    assert nxt(window, utc(2024, 7, 10, 12, 0), NEVADA) is None


def test_answer_is_utc_and_is_now_itself_when_open() -> None:
    window = CallingWindow()
    now = utc(2024, 7, 10, 12, 0, 0, 123456)
    assert nxt(window, now) is now
    tokyo_now = now.astimezone(ZoneInfo("Asia/Tokyo"))
    assert nxt(window, tokyo_now) == now
    assert nxt(window, tokyo_now).tzinfo is UTC  # type: ignore[union-attr]
    # The second 01:30 in Lord Howe (a repeated half hour) is 15:00 UTC. Python's `==` calls
    # it unequal to anything in another zone (PEP 495), so the answer must be in UTC.
    repeated = datetime(2024, 4, 7, 1, 30, fold=1, tzinfo=ZoneInfo("Australia/Lord_Howe"))
    assert nxt(window, repeated) == utc(2024, 4, 6, 15, 0)
    later = nxt(window, utc(2024, 7, 10, 22, 0))
    assert later == utc(2024, 7, 11, 8, 0)
    assert later.tzinfo is UTC  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        nxt(window, datetime(2024, 7, 10, 12, 0))


# -- properties -------------------------------------------------------------------------------

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "America/Santiago",  # transitions at midnight
    "America/Havana",  # transitions at midnight
    "Asia/Kathmandu",  # UTC+05:45
    "Pacific/Chatham",  # UTC+12:45 / +13:45
    "Pacific/Kiritimati",  # UTC+14
    "Pacific/Pago_Pago",  # UTC-11
]
NUMBERS = [TEST_NUMBER, NEVADA, MANHATTAN, "+19075551234", "+447911123456", "+61212345678"]
# Instants near DST transitions (New York, London, Lord Howe, Santiago, Havana, Chatham).
TRANSITIONS = [
    utc(2024, 3, 10, 7),
    utc(2024, 11, 3, 6),
    utc(2024, 3, 31, 1),
    utc(2024, 10, 27, 1),
    utc(2024, 4, 6, 15),
    utc(2024, 10, 5, 15, 30),
    utc(2024, 4, 7, 3),
    utc(2024, 9, 8, 4),
    utc(2024, 3, 10, 5),
    utc(2024, 11, 3, 5),
    utc(2024, 4, 6, 14),
    utc(2024, 9, 28, 14),
]


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def windows(draw: st.DrawFn) -> CallingWindow:
    # Boundaries near the small hours, where transitions happen, are drawn more often.
    minute = st.one_of(st.integers(0, 1439), st.integers(0, 240), st.sampled_from([0, 480, 1260]))
    start = draw(minute)
    end = draw(minute.filter(lambda m: m != start))
    days = draw(st.lists(st.sampled_from(ALL_DAYS), min_size=1, max_size=7, unique=True))
    timezone = draw(st.one_of(st.just("recipient"), st.sampled_from(ZONES)))
    fallback = draw(st.sampled_from(ZONES))
    window = CallingWindow(start=hhmm(start), end=hhmm(end), days=days)
    # The zone names are known-good; validating them costs ~9 ms each (available_timezones()
    # walks the tz database on every call), which would dominate this test.
    return window.model_copy(update={"timezone": timezone, "fallback_timezone": fallback})


utc_instants = st.one_of(
    st.datetimes(datetime(2020, 1, 1), datetime(2035, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda base, delta: base + timedelta(seconds=delta),
        st.sampled_from(TRANSITIONS),
        st.integers(-2 * 86_400, 2 * 86_400),
    ),
)
# `now` as the dialer might pass it: in UTC mostly, sometimes in another zone.
instants = st.one_of(
    utc_instants,
    st.builds(
        lambda now, zone: now.astimezone(ZoneInfo(zone)), utc_instants, st.sampled_from(ZONES)
    ),
)


def between(now: datetime, end: datetime) -> list[datetime]:
    """Whole minutes strictly between `now` and `end`: all of them over a short span, else
    about 300 spread evenly, plus the last 30 before `end` and the microsecond before it."""
    first = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    span = int((end - first) / timedelta(minutes=1))
    stride = 1 if span <= 24 * 60 else span // 300
    points = {first + timedelta(minutes=m) for m in range(0, span + 1, stride)}
    points |= {end.replace(second=0, microsecond=0) - timedelta(minutes=m) for m in range(30)}
    points.add(end - timedelta(microseconds=1))
    return sorted(p for p in points if now < p < end)


@settings(max_examples=200, deadline=None)
@given(
    window=windows(),
    number=st.sampled_from(NUMBERS),
    contact=st.one_of(st.none(), st.sampled_from(ZONES)),
    now=instants,
)
def test_properties(window: CallingWindow, number: str, contact: str | None, now: datetime) -> None:
    zones = candidate_zones(window, number=number, contact_timezone=contact)
    result = next_allowed_at(window, number=number, contact_timezone=contact, now=now)
    # Compare in UTC: `==` between zones is False for a time in a repeated hour (PEP 495),
    # and `+` on a zoned datetime is wall-clock arithmetic.
    now = now.astimezone(UTC)
    if inside_all(window, zones, now):
        assert result == now
    if result is not None:
        assert now <= result <= now + HORIZON
        assert result.tzinfo is UTC
        assert inside_all(window, zones, result)
    end = result if result is not None else now + HORIZON
    for point in between(now, end):
        assert not inside_all(window, zones, point), point
