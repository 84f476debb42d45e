"""Where a phone number goes, and whether a tenant's dialing permissions let it be dialed.

Pure functions, no I/O. `refusals` answers, for numbers and a tenant's permissions, which are
refused and why; the batch API calls it for up to 500 numbers a request, so it must cost about
a dictionary lookup per number.

A number's destination is libphonenumber's answer for it: its region (`region_code_for_number`,
or the calling code's main country where libphonenumber cannot tell, as for the +1555… test
numbers) and its type (`number_type`: premium rate, shared cost …), plus the documented ranges
of `ranges.py`. libphonenumber takes 10-30 µs a number for that, so answers are cached by
*settling prefix*: libphonenumber decides region and type with regular expressions over the
national number, and for most numbers every expression it consults is settled by the first few
digits (area code and the exchange's first digit, for the US) and the length; the rest is
matched by `\\d` whatever the digits are. Which prefix settles a number is worked out from the
metadata's own expressions (`_settled_by`), so a cached answer is exactly what libphonenumber
would say for every number sharing that prefix and length, never an approximation
(tests/permissions/test_destinations.py holds the two equal over 6,000 numbers).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from re import _constants as sre  # the stdlib's regex parse tree, read to find what
from re import _parser as sre_parse  # digits an expression constrains (stable since 3.11)
from typing import Any

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    PhoneMetadata,
    PhoneNumberType,
    region_code_for_country_code,
)

from outdial.permissions.ranges import RANGES, NumberRange, RefusalCode
from outdial.phones import _plain_parts

NON_GEOGRAPHIC = "001"
"""libphonenumber's region for numbers of no country (+800, +808, +870, +881, +882 …)."""

REFUSED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: RefusalCode.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: RefusalCode.SHARED_COST,
}
"""libphonenumber's types that cost the caller more and pay the called party."""

_DESCS = (
    "general_desc",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)
"""Every description libphonenumber's `_number_type_helper` matches a number against."""

_MAX_DIGITS = 17
_CACHE_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class Destination:
    region: str
    """ISO 3166-1 alpha-2 code, or "001" for a non-geographic number."""
    number_type: PhoneNumberType
    range: NumberRange | None
    """The documented range (`ranges.RANGES`) the number falls in, if any."""


@dataclass(frozen=True, slots=True)
class Permissions:
    """What a tenant may dial: the countries (ISO codes, "001" for non-geographic numbers) and
    whether premium-rate/shared-cost numbers and the documented high-risk ranges are allowed."""

    countries: frozenset[str]
    allow_premium_rate: bool = False
    allow_high_risk: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a number may not be dialed: a snake_case code and a sentence."""

    code: RefusalCode
    reason: str
    country: str


def refusals(numbers: Iterable[str], permissions: Permissions) -> dict[str, Refusal]:
    """The numbers (E.164) that `permissions` do not allow, each with why; allowed numbers are
    absent. One reason per number, the most specific first: a documented high-risk range, then
    premium rate or shared cost, then the country."""
    refused: dict[str, Refusal] = {}
    judged: dict[int, Refusal | None] = {}  # numbers of one settled block share a Destination
    for number in numbers:
        where = destination(number)
        key = id(where)
        if key not in judged:
            judged[key] = _refusal(where, permissions)
        refusal = judged[key]
        if refusal is not None:
            refused[number] = refusal
    return refused


def _refusal(where: Destination, permissions: Permissions) -> Refusal | None:
    documented = where.range.kind if where.range is not None else None
    if documented is RefusalCode.HIGH_RISK_RANGE and not permissions.allow_high_risk:
        assert where.range is not None
        return Refusal(
            documented,
            f"{where.range.name} is a known revenue-share (toll-fraud) range; the tenant's "
            "dialing permissions do not allow high-risk ranges.",
            where.region,
        )
    costly = (
        documented
        if documented in (RefusalCode.PREMIUM_RATE, RefusalCode.SHARED_COST)
        else REFUSED_TYPES.get(where.number_type)
    )
    if costly is not None and not permissions.allow_premium_rate:
        what = "a premium-rate" if costly is RefusalCode.PREMIUM_RATE else "a shared-cost"
        return Refusal(
            costly,
            f"This is {what} number ({_region_name(where.region)}); the tenant's dialing "
            "permissions do not allow premium-rate or shared-cost numbers.",
            where.region,
        )
    if where.region not in permissions.countries:
        allowed = ", ".join(sorted(permissions.countries)) or "none"
        return Refusal(
            RefusalCode.COUNTRY_NOT_PERMITTED,
            f"This number is in {_region_name(where.region)}, not among the tenant's permitted "
            f"destination countries ({allowed}).",
            where.region,
        )
    return None


def _region_name(region: str) -> str:
    return "no country (a non-geographic number)" if region == NON_GEOGRAPHIC else region


# -- a number's destination, cached by settling prefix -------------------------------------

_settled: dict[tuple[int, int, str], Destination] = {}
_prefix_sizes: dict[tuple[int, int], tuple[int, ...]] = {}
"""The prefix lengths `_settled` holds keys of, per calling code and national length."""
_sighted: set[tuple[int, int, str]] = set()
_NEAR_DIGITS = 4


def destination(number: str) -> Destination:
    """Region, libphonenumber type and documented range of an E.164 number (as accepted by
    `outdial.phones.to_e164`)."""
    plain = _plain_parts(number[1:])
    if plain is None:
        # A leading zero or national prefix (which parsing treats specially): rare, not cached.
        return _classify(number)
    country_code, national = plain
    length = len(national)
    for size in _prefix_sizes.get((country_code, length), ()):
        found = _settled.get((country_code, length, national[:size]))
        if found is not None:
            return found
    answer = _classify(number)
    # Working out a number's settling prefix costs a few times what classifying it does, so it
    # is done when a second number near it comes along: a block seen once (a lone number of a
    # rare area code) costs no more than asking libphonenumber.
    near = (country_code, length, national[:_NEAR_DIGITS])
    if near not in _sighted:
        if len(_sighted) >= _CACHE_LIMIT:
            _sighted.clear()
        _sighted.add(near)
        return answer
    if len(_settled) >= _CACHE_LIMIT:
        _settled.clear()
        _prefix_sizes.clear()
    size = _settled_by(country_code, national)
    _settled[(country_code, length, national[:size])] = answer
    sizes = _prefix_sizes.get((country_code, length), ())
    if size not in sizes:
        _prefix_sizes[(country_code, length)] = tuple(sorted((*sizes, size)))
    return answer


def country_of(number: str) -> str:
    """The region `refusals` judges a number to be in (see `destination`)."""
    return destination(number).region


def _classify(number: str) -> Destination:
    parsed = phonenumbers.parse(number, None)
    region = phonenumbers.region_code_for_number(parsed) or region_code_for_country_code(
        parsed.country_code
    )
    return Destination(region, phonenumbers.number_type(parsed), _range_of(number))


def _range_of(number: str) -> NumberRange | None:
    for entry in RANGES:
        if number.startswith(entry.prefix):
            return entry
    return None


def _settled_by(country_code: int, national: str) -> int:
    """The length of the shortest prefix of `national` that settles libphonenumber's answers
    (and the documented ranges) for every national number of the same length starting so."""
    for size in range(1, len(national)):
        prefix = national[:size]
        if _ranges_settled(country_code, prefix) and _expressions_settled(
            country_code, prefix, len(national)
        ):
            return size
    return len(national)


def _ranges_settled(country_code: int, prefix: str) -> bool:
    # A range is settled by the prefix unless the prefix stops inside it: then some numbers
    # starting so are in the range and some are not.
    for entry in _national_ranges(country_code):
        if len(entry) > len(prefix) and entry.startswith(prefix):
            return False
    return True


@cache
def _national_ranges(country_code: int) -> tuple[str, ...]:
    code = f"+{country_code}"
    return tuple(e.prefix[len(code) :] for e in RANGES if e.prefix.startswith(code))


@dataclass(frozen=True, slots=True)
class _RegionExpressions:
    leading_digits: int | None
    """Index of the region's `leading_digits` expression (matched as a prefix), if it has one."""
    descriptions: tuple[int, ...]
    """Indexes of the expressions of its number descriptions (matched whole)."""


def _expressions_settled(country_code: int, prefix: str, length: int) -> bool:
    """Whether every expression libphonenumber may consult for such a number is settled.

    It picks the first region of the calling code whose `leading_digits` match or, for a region
    without them, whose descriptions make the number valid; then matches the number against
    that region's descriptions. A region whose `leading_digits` cannot match is never picked,
    so its descriptions do not matter."""
    for region in _regions(country_code):
        picked = None
        if region.leading_digits is not None:
            picked = _settlement(country_code, region.leading_digits, prefix, length)
            if picked is None:
                return False
            if picked is False:
                continue
        if any(_settlement(country_code, i, prefix, length) is None for i in region.descriptions):
            return False
        if picked:  # every such number is in this region: later ones are never consulted
            break
    return True


@cache
def _regions(country_code: int) -> tuple[_RegionExpressions, ...]:
    regions = []
    for region in COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
        md = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        if md is None:
            continue
        leading = (
            _add_expression(country_code, md.leading_digits, (), anchored=False)
            if md.leading_digits
            else None
        )
        descriptions = tuple(
            _add_expression(
                country_code, desc.national_number_pattern, desc.possible_length, anchored=True
            )
            for desc in (getattr(md, name) for name in _DESCS)
            if desc is not None and desc.national_number_pattern
        )
        regions.append(_RegionExpressions(leading, descriptions))
    return tuple(regions)


@dataclass(frozen=True, slots=True)
class _Expression:
    compiled: "Node | None"
    """None when it uses what `_compile` does not model: it then settles nothing."""
    lengths: frozenset[int]
    """The lengths it can match at all (libphonenumber checks them first); empty: any."""
    anchored: bool


_expressions: dict[int, list[_Expression]] = {}


def _add_expression(
    country_code: int, pattern: str, lengths: Iterable[int], *, anchored: bool
) -> int:
    found = _expressions.setdefault(country_code, [])
    try:
        compiled: Node | None = _compile(sre_parse.parse(pattern).data)
    except _Unsupported:
        compiled = None
    found.append(_Expression(compiled, frozenset(lengths), anchored))
    return len(found) - 1


@lru_cache(maxsize=65_536)
def _settlement(country_code: int, index: int, prefix: str, length: int) -> bool | None:
    """Whether expression `index` of the calling code matches every national number of
    `length` digits starting with `prefix` (True), none of them (False), or some (None)."""
    if len(prefix) > 1:  # what a shorter prefix settles, a longer one does too
        shorter = _settlement(country_code, index, prefix[:-1], length)
        if shorter is not None:
            return shorter
    expression = _expressions[country_code][index]
    if expression.lengths and length not in expression.lengths:
        return False
    if expression.compiled is None:
        return None
    ends = _walk(expression.compiled, {(0, 0)}, prefix)
    anchored = expression.anchored
    ends = {(pos, last) for pos, last in ends if (pos == length if anchored else pos <= length)}
    if not ends:
        return False
    if any(last <= len(prefix) for _, last in ends):
        return True
    return None


# -- whether a prefix settles an expression -------------------------------------------------
#
# A path through an expression matches one character per character element. Walked over the
# known prefix, each path keeps (position, end of its last *constraining* element): one that
# admits fewer than all ten digits. A path whose constraining elements all lie inside the
# prefix matches every digit string of its length that starts with the prefix, so when such a
# path reaches a match the expression matches them all; when no path can, it matches none;
# anything else is unsettled. Expressions are first compiled from the stdlib's parse tree into
# nested tuples: ("c", digits admitted), ("s", items), ("b", alternatives), ("r", low, high,
# body).

_DIGITS = frozenset("0123456789")
State = tuple[int, int]
Node = tuple[Any, ...]


class _Unsupported(Exception):
    """An expression element this walk does not model: such an expression never settles."""


def _compile(items: Any) -> Node:
    return ("s", tuple(_compile_item(op, arg) for op, arg in items))


def _compile_item(op: Any, arg: Any) -> Node:
    if op in (sre.LITERAL, sre.NOT_LITERAL, sre.IN, sre.ANY):
        return ("c", _admitted(op, arg))
    if op is sre.SUBPATTERN:
        return _compile(arg[-1])
    if op is sre.BRANCH:
        alternatives = tuple(_compile(alternative) for alternative in arg[1])
        return ("b", alternatives, tuple(_first(a) for a in alternatives))
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
        low, high, body = arg
        return ("r", low, min(high, _MAX_DIGITS), _compile(body))
    raise _Unsupported(op)


def _first(node: Node) -> frozenset[str] | None:
    """The digits a match of `node` can start with; None when that is not worked out (it may
    match the empty string): then any."""
    kind = node[0]
    if kind == "c":
        return node[1]
    if kind == "s":
        return _first(node[1][0]) if node[1] else None
    if kind == "b":
        firsts = [_first(alternative) for alternative in node[1]]
        return None if any(f is None for f in firsts) else frozenset().union(*firsts)
    return _first(node[3]) if node[1] >= 1 else None


def _walk(node: Node, states: set[State], prefix: str) -> set[State]:
    kind = node[0]
    if kind == "c":
        admitted = node[1]
        constraining = admitted != _DIGITS
        size = len(prefix)
        return {
            (pos + 1, pos + 1 if constraining else last)
            for pos, last in states
            if pos < _MAX_DIGITS and (pos >= size or prefix[pos] in admitted)
        }
    if kind == "s":
        for item in node[1]:
            if not states:
                break
            states = _walk(item, states, prefix)
        return states
    if kind == "b":
        # Skip the alternatives that cannot start with the next known digit: an expression of
        # hundreds of area codes is then walked down one path.
        size = len(prefix)
        next_digits = {prefix[pos] for pos, _ in states if pos < size}
        known = all(pos < size for pos, _ in states)
        return set().union(
            *(
                _walk(alternative, states, prefix)
                for alternative, first in zip(node[1], node[2], strict=True)
                if not known or first is None or not first.isdisjoint(next_digits)
            )
        )
    _, low, high, body = node
    if body[0] == "c" and body[1] == _DIGITS:  # \d{low,high}: every digit admitted anywhere
        return {
            (pos + count, last)
            for pos, last in states
            for count in range(low, high + 1)
            if pos + count <= _MAX_DIGITS
        }
    reached = set(states) if low == 0 else set()
    current = states
    for count in range(1, high + 1):
        current = _walk(body, current, prefix)
        if not current:
            break
        if count >= low:
            reached |= current
    return reached


def _admitted(op: Any, arg: Any) -> frozenset[str]:
    if op is sre.ANY:
        return _DIGITS
    if op is sre.LITERAL:
        return frozenset({chr(arg)}) & _DIGITS
    if op is sre.NOT_LITERAL:
        return _DIGITS - {chr(arg)}
    chars: set[str] = set()
    negate = False
    for item_op, item_arg in arg:
        if item_op is sre.NEGATE:
            negate = True
        elif item_op is sre.LITERAL:
            chars.add(chr(item_arg))
        elif item_op is sre.RANGE:
            chars.update(chr(c) for c in range(item_arg[0], item_arg[1] + 1))
        elif item_op is sre.CATEGORY and item_arg is sre.CATEGORY_DIGIT:
            chars.update(_DIGITS)
        else:
            raise _Unsupported(item_op)
    admitted = frozenset(chars) & _DIGITS
    return _DIGITS - admitted if negate else admitted
