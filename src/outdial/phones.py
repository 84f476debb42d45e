import re
from typing import Annotated

import phonenumbers
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
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber("not a phone number of any known country") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber("not a possible number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _validate_e164(value: str) -> str:
    try:
        return to_e164(value)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"{value!r} is {exc}") from None


E164 = Annotated[str, AfterValidator(_validate_e164)]
"""A request field holding a phone number in E.164; normalised on the way in."""
