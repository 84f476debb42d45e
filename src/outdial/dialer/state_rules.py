"""State rules: the calling hours that US states set stricter than the federal 8:00-21:00
(47 CFR 64.1200(c)(1)), and the frequency cap some of them set. Pure data and lookups, no I/O;
windows.py judges the hours, the claimer the cap (API.md, "Dialing rules").

A number's state is its area code's (libphonenumber's geocoding): Florida, Oklahoma and
Maryland presume a number with one of their area codes to be their resident's, and mobile
numbers keep their area code wherever their owner lives. The hours are judged in the called
party's local time: the contact's own zone where one is given, else every zone the number may
be in (see `zones_of`).

Only hours and weekdays are modelled. Legal holidays (Alabama, Louisiana, Rhode Island, Utah
and others forbid calls on theirs) and states of emergency are not: they need a calendar of
each state's holidays, kept up to date, which this table does not pretend to be.

This table is a careful reading of public sources as of 2025, not legal advice; each rule
names where it comes from so that it can be checked and kept current."""

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from outdial.phones import _parse_plain_e164

Hours = tuple[str, str, tuple[str, ...]]
"""(start, end, weekdays) in the called party's local time, like a calling window's."""

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
MON_TO_SAT = (*WEEKDAYS, "sat")
EVERY_DAY = (*MON_TO_SAT, "sun")


@dataclass(frozen=True, slots=True)
class StateRule:
    """The hours one state allows calls in: inside any of `hours`, judged in `zone` when the
    law names one, else in the called party's local time."""

    state: str
    hours: tuple[Hours, ...]
    source: str
    zone: str | None = None


FREQUENCY_CAP_SOURCE = (
    "Fla. Stat. § 501.616(6)(b); Okla. Stat. tit. 15, § 775C.4; Md. Code, Com. Law § 14-4502 "
    "(Stop the Spam Calls Act of 2023): at most 3 calls to a person in 24 hours on the same "
    "subject matter"
)
"""Where the frequency cap (`max_attempts_per_24h`, 3 by default) comes from. outdial applies
it to every number its tenant dials under state rules, whatever the number's state: a tenant's
campaigns count as one subject matter, and the cap errs on the side of the called party."""


_EIGHT_TO_EIGHT = (("08:00", "20:00", EVERY_DAY),)

STATE_RULES: dict[str, StateRule] = {
    rule.state: rule
    for rule in (
        # Automated solicitation calls: none on Sundays (nor on holidays, not modelled).
        StateRule("AL", (("08:00", "20:00", MON_TO_SAT),), "Ala. Admin. Code r. 770-X-5-.17(1)(b)"),
        StateRule(
            "CT",
            (("09:00", "20:00", EVERY_DAY),),
            "Conn. Gen. Stat. § 42-288a, as amended by Public Act 23-98",
        ),
        StateRule("FL", _EIGHT_TO_EIGHT, "Fla. Stat. § 501.616(6)(a)"),
        StateRule("KY", (("10:00", "21:00", EVERY_DAY),), "Ky. Rev. Stat. § 367.46955(15)"),
        # None on Sundays (nor on holidays, not modelled).
        StateRule(
            "LA",
            (("08:00", "20:00", MON_TO_SAT),),
            "La. Pub. Serv. Comm'n Gen. Order R-29617 § V(A)(2); La. R.S. 45:811",
        ),
        StateRule(
            "MD", _EIGHT_TO_EIGHT, "Md. Code, Com. Law § 14-4502 (Stop the Spam Calls Act of 2023)"
        ),
        # "Central Standard Time" all year: 8:00-20:00 CST is 9:00-21:00 CDT in summer.
        StateRule(
            "MS",
            (("08:00", "20:00", MON_TO_SAT),),
            "Miss. Code Ann. § 77-3-723(1)",
            zone="Etc/GMT+6",
        ),
        StateRule("OK", _EIGHT_TO_EIGHT, "Okla. Stat. tit. 15, § 775C.4"),
        # "Hours of operation" (§ 5-61-2): weekdays 9-18, Saturdays 10-17, never on Sundays.
        StateRule(
            "RI",
            (("09:00", "18:00", WEEKDAYS), ("10:00", "17:00", ("sat",))),
            "R.I. Gen. Laws § 5-61-3.6 (hours of § 5-61-2)",
        ),
        StateRule(
            "TX",
            (("09:00", "21:00", MON_TO_SAT), ("12:00", "21:00", ("sun",))),
            "Tex. Bus. & Com. Code § 301.051",
        ),
        StateRule("WA", _EIGHT_TO_EIGHT, "Rev. Code Wash. § 80.36.390(2)"),
    )
}

_STATE_CODES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA",
    "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD",
    "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS",
    "Missouri": "MO", "Montana": "MT", "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH",
    "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY", "North Carolina": "NC",
    "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA",
    "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN",
    "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA", "Washington State": "WA",
    "Washington D.C.": "DC", "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
}  # fmt: skip
"""libphonenumber's English descriptions of US area codes: a state's name ("Washington State"
for WA), or, for some prefixes, a city and the state's code ("Miami, FL")."""

_SPLIT_AREA_CODES: dict[str, tuple[str, ...]] = {
    # The Florida panhandle: libphonenumber gives America/New_York only, but Pensacola and
    # Panama City keep Central time.
    "850": ("America/Chicago",),
    "448": ("America/Chicago",),
    # Western and southern Kentucky (and a few counties of 606) keep Central time;
    # libphonenumber gives America/New_York only.
    "270": ("America/Chicago",),
    "364": ("America/Chicago",),
    "606": ("America/Chicago",),
}
"""Zones that area codes of states with rules span besides the one libphonenumber gives: a
state's hours must hold in each."""


def rule_for(number: str) -> StateRule | None:
    """The state rule for an E.164 number's area code, if its state sets one."""
    state = state_of(number)
    return STATE_RULES.get(state) if state is not None else None


def split_zones(number: str) -> tuple[str, ...]:
    """Zones a number's area code spans that libphonenumber does not give (see above)."""
    return _SPLIT_AREA_CODES.get(number[2:5], ()) if number.startswith("+1") else ()


def load_geocoder() -> None:
    """Load the geocoder's data (~0.45 s) now rather than at the first US area code `state_of`
    has not seen: a dialer calls this as it starts, so none of its claims stalls on it, and
    processes that never judge a state (the CLI, most API requests) never pay for it."""
    from phonenumbers import geocoder  # noqa: F401


@lru_cache(maxsize=65_536)
def state_of(number: str) -> str | None:
    """The US state (two letters) of an E.164 number's area code, or None (not a US number,
    not geographic, or unknown: the +1555 test numbers). Cached per number, and per area code
    once one of its numbers has told it: the geocoder costs ~40 us a lookup."""
    if not number.startswith("+1") or len(number) != 12:
        return None
    area_code = number[2:5]
    if area_code in _AREA_CODE_STATES:
        return _AREA_CODE_STATES[area_code]
    parsed = _parse_plain_e164(number[1:])
    if parsed is None or phonenumbers.region_code_for_number(parsed) != "US":
        return None
    # Imported at first use (see load_geocoder): its data is ~0.45 s of start-up.
    from phonenumbers import geocoder

    description = geocoder.description_for_number(parsed, "en")
    state = _STATE_CODES.get(description)
    if state is None and ", " in description:
        code = description.rsplit(", ", 1)[1]
        state = code if code in _STATE_CODES.values() else None
    if state is not None:
        _AREA_CODE_STATES[area_code] = state
    return state


_AREA_CODE_STATES: dict[str, str] = {}
"""Area codes whose state a number has told: every number of an area code is in its state."""
