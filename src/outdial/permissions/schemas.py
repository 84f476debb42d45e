from typing import Annotated

from phonenumbers import SUPPORTED_REGIONS
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from outdial.permissions.destinations import NON_GEOGRAPHIC

MAX_COUNTRIES = 300


def country_code(value: str) -> str:
    """An ISO 3166-1 alpha-2 code libphonenumber knows (any case), or "001"."""
    code = value.strip().upper()
    if code != NON_GEOGRAPHIC and code not in SUPPORTED_REGIONS:
        raise ValueError(
            f"{value!r} is not an ISO 3166-1 alpha-2 country code with phone numbers "
            '(or "001" for non-geographic numbers)'
        )
    return code


CountryCode = Annotated[str, Field(min_length=1, max_length=8), AfterValidator(country_code)]


class DialingPermissionsUpdate(BaseModel):
    """The tenant's dialing permissions, replaced whole (an omitted field takes its default)."""

    model_config = ConfigDict(extra="forbid")

    countries: list[CountryCode] = Field(
        default_factory=list,
        max_length=MAX_COUNTRIES,
        description="Countries allowed besides those of the tenant's caller IDs: ISO 3166-1 "
        'alpha-2 codes, or "001" for non-geographic numbers (+800, +808, +870, +881, +882, '
        "+883, +979 …).",
    )
    caller_id_countries: StrictBool = Field(
        default=True,
        description="Whether the countries of the tenant's own caller IDs are allowed too "
        "(registering a UK number then allows the UK).",
    )
    allow_premium_rate: StrictBool = Field(
        default=False,
        description="Whether premium-rate and shared-cost numbers (libphonenumber's types, "
        "+979 and +808) may be dialed, in allowed countries.",
    )
    allow_high_risk: StrictBool = Field(
        default=False,
        description="Whether the documented high-risk (revenue-share) ranges may be dialed, "
        "in allowed countries: satellite (+870, +881), international networks (+882, +883), "
        "UK personal numbers (+4470).",
    )


class DialingPermissionsOut(BaseModel):
    countries: list[str]
    caller_id_countries: bool
    allow_premium_rate: bool
    allow_high_risk: bool
    effective_countries: list[str] = Field(
        description="Every country the tenant may dial right now: `countries` plus, unless "
        "turned off, those of its caller IDs."
    )
