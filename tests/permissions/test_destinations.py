"""The destination classifier: exactly libphonenumber's answers, whatever is cached, and the
refusal each permission gives."""

import random

import phonenumbers
import pytest
from phonenumbers import SUPPORTED_REGIONS, PhoneNumberType

from outdial.permissions import destinations
from outdial.permissions.destinations import Permissions, refusals
from outdial.permissions.ranges import RANGES
from outdial.phones import InvalidPhoneNumber, to_e164

US_ONLY = Permissions(countries=frozenset({"US"}))


def oracle(number: str) -> tuple[str, PhoneNumberType]:
    """libphonenumber, asked directly, number by number."""
    parsed = phonenumbers.parse(number, None)
    region = phonenumbers.region_code_for_number(parsed) or (
        phonenumbers.region_code_for_country_code(parsed.country_code)
    )
    return region, phonenumbers.number_type(parsed)


def example_numbers() -> list[str]:
    """libphonenumber's example number of every type in every region and non-geographic code,
    and neighbours of each (the same prefix, other last digits; one digit longer and shorter),
    which exercise the cache's prefixes from both sides."""
    rng = random.Random(20261124)
    found = []
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in sorted(SUPPORTED_REGIONS)
        for kind in PhoneNumberType.values()
    ] + [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    ]
    for example in examples:
        if example is None:
            continue
        digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        candidates = [digits, digits + str(rng.randrange(10)), digits[:-1]]
        for tail in (2, 4, 6):
            candidates.append(
                digits[:-tail] + "".join(rng.choice("0123456789") for _ in range(tail))
            )
        for candidate in candidates:
            try:
                found.append(to_e164(candidate))
            except InvalidPhoneNumber:
                pass
    return list(dict.fromkeys(found))


def test_every_answer_is_libphonenumbers() -> None:
    numbers = example_numbers()
    assert len(numbers) > 5_000
    # Three passes: the first sights each block, the second works out the settling prefixes
    # (in this order, neighbours first), the third answers from the cache.
    expected = {n: oracle(n) for n in numbers}
    for _ in range(3):
        for number in numbers:
            found = destinations.destination(number)
            assert (found.region, found.number_type) == expected[number], number
    assert len(destinations._settled) > 1_000


@pytest.mark.parametrize(
    ("number", "region", "kind"),
    [
        ("+15559990001", "US", PhoneNumberType.UNKNOWN),  # test range: the code's main country
        ("+12125551234", "US", PhoneNumberType.FIXED_LINE_OR_MOBILE),
        ("+19005551234", "US", PhoneNumberType.PREMIUM_RATE),
        ("+18765551234", "JM", PhoneNumberType.MOBILE),  # a +1 number, not in the US
        ("+16135550123", "CA", PhoneNumberType.FIXED_LINE_OR_MOBILE),
        ("+449098790123", "GB", PhoneNumberType.PREMIUM_RATE),
        ("+33884012345", "FR", PhoneNumberType.SHARED_COST),
        ("+8823456789012", "001", PhoneNumberType.VOIP),
    ],
)
def test_known_destinations(number, region, kind) -> None:
    found = destinations.destination(number)
    assert (found.region, found.number_type) == (region, kind)


def test_documented_ranges_each_cite_a_source() -> None:
    prefixes = [r.prefix for r in RANGES]
    assert len(prefixes) == len(set(prefixes))
    for entry in RANGES:
        assert entry.prefix.startswith("+") and entry.prefix[1:].isdigit()
        assert "http" in entry.source or "ITU-T" in entry.source, entry
        assert destinations.destination(entry.prefix + "1234567").range == entry


def test_the_issues_toll_fraud_numbers_are_refused_with_their_reasons() -> None:
    refused = refusals(
        ["+8823456789012", "+19005551234", "+449098790123", "+15559990001", "+447012345678"],
        US_ONLY,
    )
    assert {n: r.code for n, r in refused.items()} == {
        "+8823456789012": "high_risk_range",
        "+19005551234": "premium_rate",
        "+449098790123": "premium_rate",
        "+447012345678": "high_risk_range",
    }
    assert "International Networks (+882)" in refused["+8823456789012"].reason
    assert refused["+449098790123"].country == "GB"


def test_each_permission_lifts_only_its_own_refusal() -> None:
    numbers = [
        "+19005551234",
        "+33884012345",
        "+442071234567",
        "+8823456789012",
        "+80012345678",
    ]
    codes = lambda p: {n: r.code for n, r in refusals(numbers, p).items()}  # noqa: E731
    assert codes(US_ONLY) == {
        "+19005551234": "premium_rate",
        "+33884012345": "shared_cost",
        "+442071234567": "country_not_permitted",
        "+8823456789012": "high_risk_range",
        "+80012345678": "country_not_permitted",
    }
    premium = Permissions(countries=frozenset({"US"}), allow_premium_rate=True)
    assert codes(premium) == {
        "+33884012345": "country_not_permitted",  # shared cost allowed, France is not
        "+442071234567": "country_not_permitted",
        "+8823456789012": "high_risk_range",
        "+80012345678": "country_not_permitted",
    }
    everything = Permissions(
        countries=frozenset({"US", "GB", "FR", "001"}),
        allow_premium_rate=True,
        allow_high_risk=True,
    )
    assert codes(everything) == {}
    high_risk_only = Permissions(countries=frozenset({"US"}), allow_high_risk=True)
    assert codes(high_risk_only)["+8823456789012"] == "country_not_permitted"


def test_caribbean_area_codes_are_their_own_countries() -> None:
    """+1 268, 284, 473, 649, 664, 767, 809, 829, 849, 876: dialed like US numbers, billed as
    international (the FTC's 'one ring' scam list). A US-only tenant may not dial them."""
    numbers = [f"+1{area}5550123" for area in (268, 284, 473, 649, 664, 767, 809, 829, 849, 876)]
    refused = refusals(numbers, US_ONLY)
    assert set(refused) == set(numbers)
    assert {r.code for r in refused.values()} == {"country_not_permitted"}
    assert "US" not in {r.country for r in refused.values()}
