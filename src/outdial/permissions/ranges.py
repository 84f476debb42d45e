"""Number ranges refused beyond what libphonenumber's number types say, each with its source.

A deliberately small list of ranges whose risk is documented in public sources. Fraudsters
move to new ranges every week (Twilio counted 10,000 new revenue-share ranges advertised a
week, https://www.twilio.com/blog/how-to-protect-your-account-from-toll-fraud-with-voice-dialing-geo-permissions-html),
so a carrier-grade deployment adds a commercial hot-number feed; what this list cannot know,
the per-tenant country permission (off for every country the tenant has no caller ID in) and
the premium-rate check still catch.
"""

from dataclasses import dataclass
from enum import StrEnum


class RefusalCode(StrEnum):
    """Why a number may not be dialed (a documented range's `kind` is the code it answers)."""

    HIGH_RISK_RANGE = "high_risk_range"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    COUNTRY_NOT_PERMITTED = "country_not_permitted"


@dataclass(frozen=True, slots=True)
class NumberRange:
    prefix: str
    """E.164 prefix, with its `+`."""
    name: str
    kind: RefusalCode
    source: str


_ITU_CODES = (
    "ITU-T, List of ITU-T Recommendation E.164 assigned country codes (Annex to the ITU "
    "Operational Bulletin), https://www.itu.int/pub/T-SP-E.164D"
)

RANGES: tuple[NumberRange, ...] = (
    NumberRange(
        "+870",
        "Inmarsat satellite service (+870)",
        RefusalCode.HIGH_RISK_RANGE,
        f"{_ITU_CODES}: +870 is Inmarsat's single network access code. A call to a satellite "
        "terminal can cost several dollars a minute: the margin revenue-share fraud lives on.",
    ),
    NumberRange(
        "+881",
        "Global Mobile Satellite System (+881)",
        RefusalCode.HIGH_RISK_RANGE,
        f"{_ITU_CODES}: +881 is shared by global satellite networks (Iridium, Globalstar …)"
        ". Same economics as +870.",
    ),
    NumberRange(
        "+882",
        "International Networks (+882)",
        RefusalCode.HIGH_RISK_RANGE,
        f"{_ITU_CODES}; ITU-T E.164.1 (codes shared by international networks, each network "
        "identified by a 2-digit code). Numbers no country regulates, sold by international "
        "premium-rate number providers (TransNexus, 'International premium rate number market', "
        "https://www.transnexus.com/whitepapers/international-premium-rate-number-market/); "
        "the destination of issue 10's toll-fraud reproduction.",
    ),
    NumberRange(
        "+883",
        "International Networks (+883)",
        RefusalCode.HIGH_RISK_RANGE,
        f"{_ITU_CODES}; ITU-T E.164.1 (as +882, with 3- and 4-digit network codes).",
    ),
    NumberRange(
        "+979",
        "International Premium Rate Service (+979)",
        RefusalCode.PREMIUM_RATE,
        f"{_ITU_CODES}; ITU-T E.169.3 (universal international premium rate numbers): "
        "premium-rate by definition, whatever libphonenumber makes of a given number.",
    ),
    NumberRange(
        "+808",
        "International Shared Cost Service (+808)",
        RefusalCode.SHARED_COST,
        f"{_ITU_CODES}; ITU-T E.169.2 (universal international shared cost numbers).",
    ),
    NumberRange(
        "+4470",
        "UK personal numbers (070)",
        RefusalCode.HIGH_RISK_RANGE,
        "Ofcom, 'Personal numbering - Review of the 070 number range', final statement, "
        "1 October 2018 (https://www.ofcom.org.uk/phones-and-broadband/phone-numbers/"
        "personal_numbering): 070 numbers look like mobiles (07…) but set their own "
        "termination rates, and Ofcom found about one call in five to them involved fraud "
        "(missed-call and revenue-share scams).",
    ),
)
