import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata
from pydantic import AfterValidator

# ASCII digits only: `\d` would take any script's digits (fullwidth, Arabic-Indic…).
_E164_SHAPE = re.compile(r"\+[1-9][0-9]{1,14}")


class InvalidPhoneNumber(ValueError):
    pass


def to_e164(raw: str, *, plus_optional: bool = False) -> str:
    """Normalise a phone number to E.164, or raise InvalidPhoneNumber saying why.

    Accepted when E.164-shaped and *possible* for its country by libphonenumber's length rules,
    so reserved test ranges such as +1555… pass. `plus_optional` admits a missing `+`.
    """
    text = raw.strip()
    if plus_optional and text and text[0] != "+":
        text = "+" + text
    if not _E164_SHAPE.fullmatch(text):
        raise InvalidPhoneNumber("not an E.164 number (expected + and 2 to 15 digits)")
    plain = _plain_parts(text[1:])
    if plain is not None:
        # What the general path below answers for it, from lengths looked up once per
        # country: a million-contact import spends most of its time here.
        country_code, national = plain
        if len(national) not in _possible_lengths(country_code):
            raise InvalidPhoneNumber("not a possible number for its country")
        return text
    parsed = _parse(text)
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber("not a possible number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _parse(text: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber("not a phone number of any known country") from exc


def _parse_plain_e164(digits: str) -> phonenumbers.PhoneNumber | None:
    """What `phonenumbers.parse` answers for `+digits`, without its general-purpose text
    handling, which costs ~10x more and dominates a 500-recipient batch.

    Only the plain case is handled: a known country code followed by a national number that
    has no leading zero and does not start with the country's national prefix (which `parse`
    would strip). Anything else returns None and goes through `phonenumbers.parse`; a
    property test holds the two paths equal."""
    plain = _plain_parts(digits)
    if plain is None:
        return None
    country_code, national = plain
    return phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))


def _plain_parts(digits: str) -> tuple[int, str] | None:
    """(country code, national number) of a plain E.164 number (see `_parse_plain_e164`)."""
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[length:]
    if len(national) < 2 or national[0] == "0":
        return None
    known, national_prefix = _country_rules(country_code)
    if not known or (national_prefix is not None and national_prefix.match(national)):
        return None
    return country_code, national


@lru_cache(maxsize=512)
def _country_rules(country_code: int) -> tuple[bool, re.Pattern[str] | None]:
    """Whether libphonenumber has metadata for a country code, and its national prefix
    pattern (None if it has none): looked up once per country."""
    region = COUNTRY_CODE_TO_REGION_CODE[country_code][0]
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return False, None
    prefix = metadata.national_prefix_for_parsing
    return True, re.compile(prefix) if prefix else None


@lru_cache(maxsize=512)
def _possible_lengths(country_code: int) -> frozenset[int]:
    """The national number lengths `phonenumbers.is_possible_number` accepts for a country
    (its general description's lengths, local-only ones included)."""
    region = COUNTRY_CODE_TO_REGION_CODE[country_code][0]
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    general = metadata.general_desc
    return frozenset(general.possible_length) | frozenset(general.possible_length_local_only)


def _validate_e164(value: str) -> str:
    try:
        return to_e164(value)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"{value!r} is {exc}") from None


E164 = Annotated[str, AfterValidator(_validate_e164)]
"""A request field holding a phone number in E.164; normalised on the way in."""


def plain_e164(raw: str) -> str | None:
    """`to_e164(raw, plus_optional=True)` for a plain number (ASCII digits, `+` optional, no
    spaces), in one dictionary look-up and one regular-expression match: what a
    10,000,000-row do-not-call import can afford per row. None means "not decided here": the
    caller asks `to_e164`, which also says why a number is refused."""
    matchers = _PLAIN_MATCHERS or _plain_matchers()
    if raw[:1] == "+":
        match = matchers.get(raw[1:4])
        return raw if match is not None and match(raw, 1) else None
    match = matchers.get(raw[:3])
    return "+" + raw if match is not None and match(raw) else None


_PLAIN_MATCHERS: dict[str, Callable[..., re.Match[str] | None]] = {}


def _plain_matchers() -> dict[str, Callable[..., re.Match[str] | None]]:
    """For each possible first three digits, a `fullmatch` of exactly the plain numbers so
    starting that `to_e164` accepts unchanged: the country code those digits begin with,
    then a national number of a possible length for it that neither starts with 0 nor with
    the country's national prefix (the conditions of `_plain_parts`). Built on first use."""
    by_country: dict[int, re.Pattern[str] | None] = {}
    for start in range(100, 1000):
        prefix = str(start)
        for length in (1, 2, 3):
            country_code = int(prefix[:length])
            if country_code in COUNTRY_CODE_TO_REGION_CODE:
                if country_code not in by_country:
                    by_country[country_code] = _country_pattern(country_code)
                rule = by_country[country_code]
                if rule is not None:
                    _PLAIN_MATCHERS[prefix] = rule.fullmatch
                break
    return _PLAIN_MATCHERS


def _country_pattern(country_code: int) -> re.Pattern[str] | None:
    known, national_prefix = _country_rules(country_code)
    code = str(country_code)
    lengths = sorted(n for n in _possible_lengths(country_code) if n >= 2 and len(code) + n <= 15)
    if not known or not lengths:
        return None
    not_prefixed = f"(?!(?:{national_prefix.pattern}))" if national_prefix else ""
    national = "|".join(f"[0-9]{{{n}}}" for n in lengths)
    return re.compile(f"{code}(?!0){not_prefixed}(?:{national})")
