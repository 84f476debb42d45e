"""When a job may be dialed: calling windows and state rules judged in the recipient's local
time.

Pure functions, no I/O. The dialer calls `next_allowed_at` for every job it claims, so the
common case (the window is open now) costs one `astimezone` call per zone, and everything else
is a bisect in intervals computed once per UTC day (integer arithmetic, cached).

State rules (state_rules.py), where asked for, add the hours of the number's state on top of
the window: judged in the contact's own zone where one is given, else in every zone the number
may be in (libphonenumber's, and those of area codes it knows only one zone of), or in the
zone the law itself names. A job must be inside the window and inside its state's hours.

Semantics (API.md, "Dialing rules"):

* An instant is *inside* a zone's window when the recipient's wall clock at that instant reads
  a time t on a local day D with start <= t < end and D's weekday in `days`. When end < start
  the window spans midnight: a reading t < end on day D belongs to the window that opened on
  D - 1, so `days` names the day a window starts.
* The rule is judged on the clock reading at each instant, exactly as a person (or a
  regulator) would check "was it between 08:00 and 21:00 where they were?". DST follows:
  - A boundary in a skipped hour (spring forward) takes effect at the transition: for a start
    of 02:30 on a day the clock jumps 02:00 -> 03:00, the window opens at 03:00, the first
    reading >= 02:30. (zoneinfo's fold=0 would give 03:30: 30 minutes lost for no reason.)
    An end in the skipped hour closes the window at the transition in the same way.
  - A repeated hour (fall back) is judged by the reading too, so both passes count. A start of
    01:30 on a night the clock goes 01:59 EDT -> 01:00 EST opens at 01:30 EDT, the window is
    shut again for 01:00-01:29 EST (the clock reads before 01:30) and reopens at 01:30 EST.
    Only boundaries inside the repeated hour see this; 08:00-21:00 windows never do.
* Where several zones apply (a number spanning zones), the job may be dialed only at instants
  inside the window in every one of them.

Every interval below is in integer UTC epoch seconds; local "epoch seconds" are the same
count on the zone's wall clock, so a local day is `local // 86400` and needs no calendar.
"""

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezones

from outdial.calls.schemas import ALL_DAYS, CallingWindow
from outdial.dialer.state_rules import StateRule, rule_for, split_zones
from outdial.phones import _parse_plain_e164

HORIZON = timedelta(days=8)
"""How far ahead `next_allowed_at` looks before answering None."""

_DAY = 86_400
# 1970-01-01 was a Thursday; with Monday = 0 a local day number d has weekday (d + 3) % 7.
_EPOCH_WEEKDAY = 3
_UNKNOWN_ZONE = "Etc/Unknown"
_CLOCK_CHECK_MAX_ZONES = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_WINDOW_FALLBACK = "UTC"

Interval = tuple[int, int]
"""[start, end) in UTC epoch seconds."""
Rule = tuple[int, int, frozenset[int]]
"""(start, end) in minutes after local midnight and the allowed start weekdays (Monday = 0)."""
Constraint = tuple[ZoneInfo, tuple[Rule, ...]]
"""A zone and the rules of which its clock must satisfy at least one (a state's hours may
differ by weekday: Texas allows 9-21 Monday to Saturday and 12-21 on Sundays)."""


def candidate_zones(
    window: CallingWindow, *, number: str, contact_timezone: str | None
) -> tuple[ZoneInfo, ...]:
    """The zones in which `window` is judged for a call to `number` (E.164).

    An explicit `window.timezone` wins; else the contact's own `timezone` (mobile and ported
    numbers do not follow area codes; an empty string counts as absent, as from a blank CSV
    cell); else every zone libphonenumber gives for the number; else, when it cannot tell
    (the +1555... test numbers), `window.fallback_timezone`. An unknown zone name raises
    `zoneinfo.ZoneInfoNotFoundError`: names are validated where they enter the system.
    """
    return _candidate_zones(window.timezone, contact_timezone, number, window.fallback_timezone)


def _candidate_zones(
    timezone: str, contact_timezone: str | None, number: str, fallback_timezone: str
) -> tuple[ZoneInfo, ...]:
    if timezone != "recipient":
        return (ZoneInfo(timezone),)
    if contact_timezone:
        return (ZoneInfo(contact_timezone),)
    return _number_zones(number) or (ZoneInfo(fallback_timezone),)


def next_allowed_at(
    window: CallingWindow | None,
    *,
    number: str,
    contact_timezone: str | None,
    now: datetime,
    state_rules: bool = False,
) -> datetime | None:
    """The earliest instant >= `now` at which a call to `number` is inside `window` in every
    candidate zone (see `candidate_zones`) and, with `state_rules`, inside the hours of the
    number's state (see `judged_in`), in UTC; None if there is none within 8 days.

    When `now` is already inside everywhere the answer is `now` (the same object when `now`
    is in UTC), which the dialer reads as "dial it". `now` must be timezone-aware.
    """
    judged = judged_in(
        window, number=number, contact_timezone=contact_timezone, state_rules=state_rules
    )
    return allowed_from(judged, now)


@dataclass(frozen=True, slots=True)
class Judged:
    """Where and by what a call is judged: the window's zones, and the state rule with the
    zones its hours are judged in (empty when no state rule applies)."""

    window_zones: tuple[ZoneInfo, ...]
    state_rule: StateRule | None
    state_zones: tuple[ZoneInfo, ...]
    constraints: tuple[Constraint, ...]


def judged_in(
    window: CallingWindow | None,
    *,
    number: str,
    contact_timezone: str | None,
    state_rules: bool,
) -> Judged:
    """What a call to `number` is judged by: `window` in its candidate zones (none without a
    window) and, with `state_rules`, the number's state's hours in the called party's zones
    (the contact's, else the number's own including those `split_zones` adds, else the
    window's fallback zone; or the one zone the law names)."""
    if window is None:
        return _judged(None, None, _NO_WINDOW_FALLBACK, number, contact_timezone, state_rules)
    return _judged(
        _rule(window.start, window.end, tuple(window.days)),
        window.timezone,
        window.fallback_timezone,
        number,
        contact_timezone,
        state_rules,
    )


@lru_cache(maxsize=65_536)
def _judged(
    window_rule: Rule | None,
    window_timezone: str | None,
    fallback_timezone: str,
    number: str,
    contact_timezone: str | None,
    state_rules: bool,
) -> Judged:
    """Cached: every claim judges its jobs, and a number is judged again each time its job is
    rescheduled; this costs a few microseconds, the open-window check about two."""
    constraints: list[Constraint] = []
    window_zones: tuple[ZoneInfo, ...] = ()
    if window_rule is not None:
        assert window_timezone is not None
        window_zones = _candidate_zones(
            window_timezone, contact_timezone, number, fallback_timezone
        )
        constraints.extend((zone, (window_rule,)) for zone in window_zones)
    state_rule = rule_for(number) if state_rules else None
    state_zones: tuple[ZoneInfo, ...] = ()
    if state_rule is not None:
        state_zones = _state_zones(state_rule, number, contact_timezone, fallback_timezone)
        rules = tuple(_rule(start, end, days) for start, end, days in state_rule.hours)
        constraints.extend((zone, rules) for zone in state_zones)
    return Judged(window_zones, state_rule, state_zones, tuple(constraints))


def _state_zones(
    rule: StateRule, number: str, contact_timezone: str | None, fallback_timezone: str
) -> tuple[ZoneInfo, ...]:
    if rule.zone is not None:
        return (ZoneInfo(rule.zone),)
    if contact_timezone:
        return (ZoneInfo(contact_timezone),)
    zones = _number_zones(number)
    extra = tuple(ZoneInfo(name) for name in split_zones(number))
    return tuple(dict.fromkeys(zones + extra)) or (ZoneInfo(fallback_timezone),)


def allowed_from(judged: Judged, now: datetime) -> datetime | None:
    """The earliest instant >= `now` inside every one of `judged`'s constraints, in UTC;
    None if there is none within 8 days (`now` itself when it is inside already)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    constraints = judged.constraints
    # Reading each zone's clock is the cheapest check for a number with a zone or two. For a
    # number with many (a toll-free one has 42), a bisect in the day's cached intervals is.
    if len(constraints) <= _CLOCK_CHECK_MAX_ZONES and all(
        _inside_any(rules, now.astimezone(zone)) for zone, rules in constraints
    ):
        return now if now.tzinfo is UTC else now.astimezone(UTC)
    return _next_opening(constraints, now)


# -- zones of a number ------------------------------------------------------------------------


@lru_cache(maxsize=65_536)
def _number_zones(number: str) -> tuple[ZoneInfo, ...]:
    """libphonenumber's zones for an E.164 number, without "Etc/Unknown"; () when unknown.

    Cached per number: a job is looked at again each time it is rescheduled, and the lookup
    (10-50 us) would otherwise dominate the open-window path (~2 us)."""
    try:
        parsed = _parse_plain_e164(number[1:]) or phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        # Stored numbers were validated on the way in; one that still fails to parse has no
        # known zone, which is what the fallback zone is for.
        return ()
    return _zones_named(phone_timezones.time_zones_for_number(parsed))


@lru_cache(maxsize=4096)
def _zones_named(names: tuple[str, ...]) -> tuple[ZoneInfo, ...]:
    # Many numbers share one tuple of names (every +1212 number has the same); sharing one
    # tuple of zones between them keeps the per-number cache small.
    return tuple(ZoneInfo(name) for name in names if name != _UNKNOWN_ZONE)


# -- the rule and the open-window check -------------------------------------------------------


@lru_cache(maxsize=1024)
def _rule(start: str, end: str, days: tuple[str, ...]) -> Rule:
    return _minutes(start), _minutes(end), frozenset(ALL_DAYS.index(day) for day in days)


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


def _inside_any(rules: tuple[Rule, ...], local: datetime) -> bool:
    return any(_inside(rule, local) for rule in rules)


def _inside(rule: Rule, local: datetime) -> bool:
    """Whether a local wall-clock reading is inside the window.

    Comparing whole minutes is exact: the boundaries are whole minutes, so start <= t iff
    start <= floor(t) and t < end iff floor(t) < end."""
    start, end, days = rule
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    if start < end:
        return weekday in days and start <= minute < end
    if minute >= start:
        return weekday in days
    return minute < end and (weekday - 1) % 7 in days


# -- allowed intervals over the horizon: the closed-window path, and the many-zone one --------


def _next_opening(constraints: tuple[Constraint, ...], now: datetime) -> datetime | None:
    now_s = (now - _EPOCH) / timedelta(seconds=1)
    # Intervals are computed for a span anchored on now's UTC day, so every call on the same
    # day shares one cache entry; the span covers [now - 1 day, now + 9 days] whatever the time.
    day0 = int(now_s // _DAY) * _DAY
    allowed = _allowed(constraints, day0)
    # The first interval that has not ended by now; intervals are sorted and disjoint.
    index = bisect.bisect_right(allowed, now_s, key=lambda interval: interval[1])
    if index == len(allowed):
        return None
    opening = allowed[index][0]
    if opening <= now_s:
        return now if now.tzinfo is UTC else now.astimezone(UTC)
    if opening > now_s + HORIZON.total_seconds():
        return None
    return _EPOCH + timedelta(seconds=opening)


@lru_cache(maxsize=4096)
def _allowed(constraints: tuple[Constraint, ...], day0: int) -> tuple[Interval, ...]:
    """The instants in [day0 - 1 day, day0 + 10 days) inside every constraint."""
    lo, hi = day0 - _DAY, day0 + 10 * _DAY
    result: Sequence[Interval] = [(lo, hi)]
    for zone, rules in constraints:
        result = _intersect(result, _rules_allowed(rules, zone, day0))
    return tuple(result)


@lru_cache(maxsize=4096)
def _rules_allowed(rules: tuple[Rule, ...], zone: ZoneInfo, day0: int) -> tuple[Interval, ...]:
    """The instants in [day0 - 1 day, day0 + 10 days) inside any of `rules` in one zone."""
    if len(rules) == 1:
        return _zone_allowed(rules[0], zone, day0)
    return tuple(_merge(piece for rule in rules for piece in _zone_allowed(rule, zone, day0)))


@lru_cache(maxsize=4096)
def _zone_allowed(rule: Rule, zone: ZoneInfo, day0: int) -> tuple[Interval, ...]:
    """The instants in [day0 - 1 day, day0 + 10 days) inside the window in one zone.

    Between two offset transitions the wall clock is UTC plus a constant, so the allowed set
    there is each local day's window shifted by that offset, clipped to the segment. Doing
    this per segment is what gives the DST semantics in the module docstring: a boundary in
    a skipped hour is clipped to the transition, and a repeated hour is visited once per
    offset."""
    start, end, days = rule
    start_s, end_s = start * 60, end * 60
    if end < start:
        end_s += _DAY
    pieces: list[Interval] = []
    for seg_lo, seg_hi, offset in _segments(zone, day0 - _DAY, day0 + 10 * _DAY):
        # Local days whose window can reach into the segment, including the day before its
        # first local day for a window that spans midnight.
        first_day = (seg_lo + offset) // _DAY - 1
        last_day = (seg_hi - 1 + offset) // _DAY
        for day in range(first_day, last_day + 1):
            if (day + _EPOCH_WEEKDAY) % 7 not in days:
                continue
            lo = max(day * _DAY + start_s - offset, seg_lo)
            hi = min(day * _DAY + end_s - offset, seg_hi)
            if lo < hi:
                pieces.append((lo, hi))
    return tuple(_merge(pieces))


def _segments(zone: ZoneInfo, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """[lo, hi) cut at the zone's offset transitions: (segment start, end, UTC offset s).

    Offsets are sampled once a day and each change is bisected to the second. Two transitions
    less than a day apart would be missed; no zone has had such a pair in decades."""
    segments: list[tuple[int, int, int]] = []
    seg_lo, offset = lo, _offset(zone, lo)
    # hi - lo is a whole number of days, so the last probe is hi itself.
    for probe in range(lo + _DAY, hi + 1, _DAY):
        probe_offset = _offset(zone, probe)
        if probe_offset != offset:
            transition = _transition(zone, probe - _DAY, probe, offset)
            segments.append((seg_lo, transition, offset))
            seg_lo, offset = transition, _offset(zone, transition)
    segments.append((seg_lo, hi, offset))
    return segments


def _transition(zone: ZoneInfo, before: int, after: int, old_offset: int) -> int:
    """The first second in (before, after] whose offset is not `old_offset`."""
    while after - before > 1:
        middle = (before + after) // 2
        if _offset(zone, middle) == old_offset:
            before = middle
        else:
            after = middle
    return after


def _offset(zone: ZoneInfo, instant: int) -> int:
    offset = datetime.fromtimestamp(instant, zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def _merge(pieces: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering `pieces`; touching ones are joined (a window that
    runs across a transition comes out of `_zone_allowed` in two pieces)."""
    merged: list[Interval] = []
    for lo, hi in sorted(pieces):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The intersection of two sorted, disjoint interval lists."""
    result: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo < hi:
            result.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return result
