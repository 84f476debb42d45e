"""`phones.plain_e164`, the do-not-call import's per-row check: wherever it decides, it decides
as `to_e164` does (it may leave a number undecided, never decide it differently)."""

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.phones import InvalidPhoneNumber, _plain_parts, plain_e164, to_e164

COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def reference(raw: str) -> str | None:
    try:
        return to_e164(raw, plus_optional=True)
    except InvalidPhoneNumber:
        return None


@st.composite
def numbers(draw: st.DrawFn) -> str:
    country = str(draw(st.sampled_from(COUNTRY_CODES)))
    national = draw(st.text("0123456789", min_size=0, max_size=16 - len(country)))
    return draw(st.sampled_from(["+", ""])) + country + national


@settings(max_examples=2000, deadline=None)
@given(numbers())
def test_it_agrees_with_to_e164(raw: str) -> None:
    decided = plain_e164(raw)
    if decided is not None:
        assert decided == reference(raw)


def test_it_decides_what_the_fast_path_of_to_e164_decides() -> None:
    """Every country's numbers of each length starting 2…9 (what registries hold) that
    `to_e164` takes unchanged through its own fast path are decided here too."""
    undecided = []
    for country in COUNTRY_CODES:
        for length in range(2, 14):
            raw = f"+{country}{'2' * length}"[:16]
            fast_in_to_e164 = _plain_parts(raw[1:]) is not None
            if fast_in_to_e164 and reference(raw) == raw and plain_e164(raw) is None:
                undecided.append(raw)
    assert undecided == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+15559990001", "+15559990001"),
        ("15559990001", "+15559990001"),
        ("+442079460000", "+442079460000"),
        ("+390612345678", None),  # a leading zero: to_e164's general path decides
        ("+1555", None),
        ("+11234567890", None),  # the national prefix "1" after +1: to_e164 decides
        (" +15559990001", None),
        ("+1555999000\u0661", None),  # an Arabic-Indic digit one
        ("", None),
        ("+", None),
    ],
)
def test_examples(raw: str, expected: str | None) -> None:
    assert plain_e164(raw) == expected
