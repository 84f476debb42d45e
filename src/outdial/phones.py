import re
from functools import lru_cache
from typing import Annotated

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata
from pydantic import AfterValidator

_E164_SHAPE = re.compile(r"^\+[1-9]\d{1,14}$")


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
    if not _E164_SHAPE.match(text):
        raise InvalidPhoneNumber("not an E.164 number (expected + and 2 to 15 digits)")
    parsed = _parse_plain_e164(text[1:]) or _parse(text)
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
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[length:]
    if len(national) < 2 or national[0] == "0":
        return None
    region = COUNTRY_CODE_TO_REGION_CODE[country_code][0]
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    if prefix and _prefix_pattern(prefix).match(national):
        return None
    return phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))


@lru_cache(maxsize=512)
def _prefix_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(prefix)


def _validate_e164(value: str) -> str:
    try:
        return to_e164(value)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"{value!r} is {exc}") from None


E164 = Annotated[str, AfterValidator(_validate_e164)]
"""A request field holding a phone number in E.164; normalised on the way in."""
