"""State rules judged on top of the calling window (dialer/windows.py with state_rules.py):
pure functions, exact instants. Each expected instant is worked out by hand from the rule's
source (cited in state_rules.py), not from the code."""

from datetime import UTC, datetime

import pytest

from outdial.calls.schemas import CallingWindow
from outdial.dialer.state_rules import STATE_RULES, rule_for, state_of
from outdial.dialer.windows import judged_in, next_allowed_at

FEDERAL = CallingWindow()  # 08:00-21:00 every day, in the recipient's zones
MIAMI = "+13055550100"  # America/New_York
PANHANDLE = "+18505550100"  # libphonenumber: America/New_York; Pensacola keeps Central time
AUSTIN = "+15125550100"  # America/Chicago
JACKSON_MS = "+16015550100"  # America/Chicago, but the law says Central Standard Time
PROVIDENCE = "+14015550100"
BIRMINGHAM = "+12055550100"
SEATTLE = "+12065550100"
MANHATTAN = "+12125550100"  # New York sets no stricter hours


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def allowed(
    number: str, now: datetime, *, window: CallingWindow | None = FEDERAL, **kw
) -> datetime:
    at = next_allowed_at(
        window, number=number, contact_timezone=None, now=now, state_rules=True, **kw
    )
    assert at is not None
    return at


@pytest.mark.parametrize(
    ("number", "state"),
    [
        (MIAMI, "FL"),
        (PANHANDLE, "FL"),
        (AUSTIN, "TX"),
        (JACKSON_MS, "MS"),
        (PROVIDENCE, "RI"),
        (BIRMINGHAM, "AL"),
        (SEATTLE, "WA"),  # "Washington State" in libphonenumber's words
        ("+14055550100", "OK"),
        ("+14105550100", "MD"),
        (MANHATTAN, "NY"),  # "New York, NY": a city and the state's code
        ("+12025550100", "DC"),
        ("+15559990001", None),  # the test range: no state
        ("+14165550100", None),  # Toronto: +1, but not the US
        ("+18005550100", None),  # toll-free: no state
        ("+442071234567", None),
    ],
)
def test_the_state_of_a_number_is_its_area_codes(number: str, state: str | None) -> None:
    assert state_of(number) == state
    assert rule_for(number) == (STATE_RULES.get(state) if state else None)


def test_every_rule_names_its_source_and_keeps_inside_the_federal_hours() -> None:
    for state, rule in STATE_RULES.items():
        assert rule.state == state and rule.source
        for start, end, days in rule.hours:
            assert "08:00" <= start < end <= "21:00" and days


def test_florida_ends_at_eight_where_the_window_ends_at_nine() -> None:
    # 15 Jan 2025, EST (UTC-5). 19:30 local: inside both.
    now = utc(2025, 1, 16, 0, 30)
    assert allowed(MIAMI, now) == now
    # 20:30 local: inside the window, outside Florida's hours: wait for 8:00 local.
    late = utc(2025, 1, 16, 1, 30)
    assert allowed(MIAMI, late) == utc(2025, 1, 16, 13, 0)
    assert next_allowed_at(FEDERAL, number=MIAMI, contact_timezone=None, now=late) == late
    # Manhattan's number sets no stricter rule: 20:30 is fine there.
    assert allowed(MANHATTAN, late) == late


def test_a_number_spanning_two_zones_is_judged_in_both() -> None:
    # 8:30 EST is 7:30 CST in Pensacola: wait for 8:00 CST, 14:00 UTC.
    now = utc(2025, 1, 15, 13, 30)
    assert allowed(MIAMI, now) == now
    assert allowed(PANHANDLE, now) == utc(2025, 1, 15, 14, 0)
    zones = judged_in(FEDERAL, number=PANHANDLE, contact_timezone=None, state_rules=True)
    assert [z.key for z in zones.state_zones] == ["America/New_York", "America/Chicago"]
    # And 19:30 CST is 20:30 EST in Tallahassee: Florida's day is over.
    assert allowed(PANHANDLE, utc(2025, 1, 16, 1, 30)) == utc(2025, 1, 16, 14, 0)


def test_texas_sundays_start_at_noon() -> None:
    # Saturday 18 Jan 2025, 9:30 CST: open. Sunday 19 Jan, 10:00 CST: wait for noon.
    saturday = utc(2025, 1, 18, 15, 30)
    assert allowed(AUSTIN, saturday) == saturday
    assert allowed(AUSTIN, utc(2025, 1, 19, 16, 0)) == utc(2025, 1, 19, 18, 0)
    # 8:30 on a Monday is inside the window but before Texas's 9:00.
    assert allowed(AUSTIN, utc(2025, 1, 20, 14, 30)) == utc(2025, 1, 20, 15, 0)


def test_mississippi_is_judged_in_central_standard_time_all_year() -> None:
    # Tuesday 15 July 2025: 8:30 CDT is 7:30 CST; the law's 8:00 CST is 9:00 CDT (14:00 UTC).
    assert allowed(JACKSON_MS, utc(2025, 7, 15, 13, 30)) == utc(2025, 7, 15, 14, 0)
    # 20:30 CDT is 19:30 CST: still allowed, and the window's 21:00 CDT ends it.
    evening = utc(2025, 7, 16, 1, 30)
    assert allowed(JACKSON_MS, evening) == evening
    # Sunday 20 July, noon: no calls on Sundays; Monday 8:00 CST = 14:00 UTC.
    assert allowed(JACKSON_MS, utc(2025, 7, 20, 17, 0)) == utc(2025, 7, 21, 14, 0)


def test_rhode_island_has_saturday_hours_and_no_sundays() -> None:
    # Saturday 18 Jan 2025, 9:30 EST: Saturdays open at 10:00.
    assert allowed(PROVIDENCE, utc(2025, 1, 18, 14, 30)) == utc(2025, 1, 18, 15, 0)
    # Saturday 17:30: closed until Monday 9:00 EST (14:00 UTC), Sunday skipped.
    assert allowed(PROVIDENCE, utc(2025, 1, 18, 22, 30)) == utc(2025, 1, 20, 14, 0)
    # A weekday 17:59 is inside; 18:00 is not.
    assert allowed(PROVIDENCE, utc(2025, 1, 20, 22, 59)) == utc(2025, 1, 20, 22, 59)
    assert allowed(PROVIDENCE, utc(2025, 1, 20, 23, 0)) == utc(2025, 1, 21, 14, 0)


def test_alabama_never_on_sundays() -> None:
    # Sunday 19 Jan 2025, noon CST: Monday 8:00 CST.
    assert allowed(BIRMINGHAM, utc(2025, 1, 19, 18, 0)) == utc(2025, 1, 20, 14, 0)


def test_the_window_still_binds_where_it_is_the_stricter() -> None:
    narrow = CallingWindow(start="10:00", end="12:00")
    # Florida's day starts at 8:00, the window's at 10:00 EST = 15:00 UTC.
    assert allowed(MIAMI, utc(2025, 1, 15, 13, 30), window=narrow) == utc(2025, 1, 15, 15, 0)


def test_without_a_window_state_rules_bind_alone() -> None:
    # A batch without a calling_window that asks for state rules: 7:00 EST in Miami.
    assert allowed(MIAMI, utc(2025, 1, 15, 12, 0), window=None) == utc(2025, 1, 15, 13, 0)
    # A number in no state with stricter hours: any time.
    night = utc(2025, 1, 15, 7, 0)
    assert allowed(MANHATTAN, night, window=None) == night
    assert allowed("+15559990001", night, window=None) == night


def test_state_rules_off_leave_the_window_alone() -> None:
    late = utc(2025, 1, 16, 1, 30)  # 20:30 EST
    assert next_allowed_at(FEDERAL, number=MIAMI, contact_timezone=None, now=late) == late
    assert (
        next_allowed_at(None, number=MIAMI, contact_timezone=None, now=late, state_rules=False)
        == late
    )


def test_a_contacts_own_zone_is_where_its_states_hours_are_judged() -> None:
    # A Miami number whose owner lives in Los Angeles: 20:30 EST is 17:30 PST, fine there.
    late = utc(2025, 1, 16, 1, 30)
    assert (
        next_allowed_at(
            FEDERAL,
            number=MIAMI,
            contact_timezone="America/Los_Angeles",
            now=late,
            state_rules=True,
        )
        == late
    )
    judged = judged_in(
        FEDERAL, number=MIAMI, contact_timezone="America/Los_Angeles", state_rules=True
    )
    assert judged.state_rule is not None and judged.state_rule.state == "FL"
    assert [z.key for z in judged.state_zones] == ["America/Los_Angeles"]
    assert [z.key for z in judged.window_zones] == ["America/Los_Angeles"]


def test_an_explicit_window_zone_does_not_move_the_states_hours() -> None:
    # The window is judged in UTC as asked; Florida's hours still in Miami's time.
    in_utc = CallingWindow(start="00:00", end="23:59", timezone="UTC")
    judged = judged_in(in_utc, number=MIAMI, contact_timezone=None, state_rules=True)
    assert [z.key for z in judged.window_zones] == ["UTC"]
    assert [z.key for z in judged.state_zones] == ["America/New_York"]
    assert allowed(MIAMI, utc(2025, 1, 16, 1, 30), window=in_utc) == utc(2025, 1, 16, 13, 0)
