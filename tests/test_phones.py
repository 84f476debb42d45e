import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.phones import InvalidPhoneNumber, _parse_plain_e164, to_e164

COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@st.composite
def e164_digits(draw: st.DrawFn) -> str:
    country = str(draw(st.sampled_from(COUNTRY_CODES)))
    national = draw(st.text("0123456789", min_size=1, max_size=15 - len(country)))
    return country + national


def reference_to_e164(text: str) -> str:
    parsed = phonenumbers.parse(text, None)
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber("impossible")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@settings(max_examples=3000)
@given(e164_digits())
def test_fast_path_agrees_with_phonenumbers_parse(digits: str) -> None:
    fast = _parse_plain_e164(digits)
    if fast is not None:
        assert fast == phonenumbers.parse("+" + digits, None)


@settings(max_examples=3000)
@given(e164_digits())
def test_to_e164_agrees_with_the_reference(digits: str) -> None:
    try:
        expected: str | None = reference_to_e164("+" + digits)
    except (phonenumbers.NumberParseException, InvalidPhoneNumber):
        expected = None
    try:
        actual: str | None = to_e164("+" + digits)
    except InvalidPhoneNumber:
        actual = None
    assert actual == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+15559990001", "+15559990001"),  # the seeds' reserved test range is accepted
        ("+442079460000", "+442079460000"),
        ("+390612345678", "+390612345678"),  # Italian leading zero kept
        (" +15559990001 ", "+15559990001"),
    ],
)
def test_accepts(raw: str, expected: str) -> None:
    assert to_e164(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "15559990001",
        "+1555",
        "+0123456789",
        "+1 555 999 0001",
        "",
        "+",
        "+1\uff15\uff15\uff15\uff19\uff19\uff19\uff10\uff10\uff10\uff11",  # fullwidth digits
        "+1555999000\u0661",  # an Arabic-Indic digit
    ],
)
def test_rejects(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        to_e164(raw)


def test_plus_optional_for_contacts() -> None:
    assert to_e164("15559990001", plus_optional=True) == "+15559990001"
