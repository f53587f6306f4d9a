"""`phonenumbers.is_valid_number` for E.164 digits, with the metadata's patterns compiled once.

Why: the library looks each pattern up in a regex cache, matches it twice (prefix, then
whole) and walks every number type in turn; for the canonical numbers contact files carry
that was most of the per-row cost of an upload (~15 µs of ~55). The decision is the
library's own: a number is valid when its region's general description matches and at
least one type description (premium rate … mobile) does, each gated by its possible
lengths; calling codes shared by several regions pick the region the way the library does.
A test compares the two over every calling code.

`is_geographical_e164` answers, from the same compiled patterns, whether the library's
`number_type` of a valid number is a geographical one (`is_number_type_geographical`):
which time zones phonenumbers gives a number depends on it (security/phone_zones.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, REGION_CODE_FOR_NON_GEO_ENTITY, PhoneMetadata

__all__ = ["is_geographical_e164", "is_valid_e164"]

# The descriptions `_number_type_helper` tries after the general one; any match is a type.
_TYPE_DESCRIPTIONS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
# The same, without fixed lines: the types `is_number_type_geographical` calls not geographical.
_NON_GEOGRAPHICAL = _TYPE_DESCRIPTIONS[:-1]


@dataclass(frozen=True)
class _Pattern:
    """One number description: its lengths (empty = any) and its whole-number pattern."""

    lengths: frozenset[int]
    pattern: re.Pattern[str]

    def matches(self, national: str) -> bool:
        if self.lengths and len(national) not in self.lengths:
            return False
        return self.pattern.fullmatch(national) is not None


@dataclass(frozen=True)
class _Region:
    leading_digits: re.Pattern[str] | None
    general: _Pattern | None
    types: tuple[_Pattern, ...]
    non_geographical: tuple[_Pattern, ...] = ()  # premium rate … voicemail
    fixed_line: _Pattern | None = None
    same_mobile_and_fixed_line: bool = False
    # Number length → one alternation of the type patterns allowed at that length (or None).
    _types_by_length: dict[int, re.Pattern[str] | None] = field(default_factory=dict, compare=False)

    def is_valid(self, national: str) -> bool:
        general = self.general
        if general is None or not general.matches(national):
            return False
        size = len(national)
        try:
            combined = self._types_by_length[size]
        except KeyError:
            combined = self._types_by_length[size] = self._combine(size)
        return combined is not None and combined.fullmatch(national) is not None

    def is_geographical(self, national: str, mobile_is_geographical: bool) -> bool:
        """`_number_type_helper` of a valid number, then `is_number_type_geographical`: a
        non-geographical type first; else a valid number is a fixed line (geographical), a
        fixed line or mobile (geographical) or a mobile (geographical in some countries)."""
        if any(kind.matches(national) for kind in self.non_geographical):
            return False
        if mobile_is_geographical or self.same_mobile_and_fixed_line:
            return True
        return self.fixed_line is not None and self.fixed_line.matches(national)

    def _combine(self, size: int) -> re.Pattern[str] | None:
        """fullmatch of `(?:a)|(?:b)` succeeds exactly when a or b fully matches."""
        allowed = [t.pattern.pattern for t in self.types if not t.lengths or size in t.lengths]
        return re.compile("|".join(f"(?:{p})" for p in allowed)) if allowed else None


def _pattern(description: object) -> _Pattern | None:
    text = getattr(description, "national_number_pattern", None) if description else None
    if not text:
        return None  # the library never matches an absent or empty pattern
    lengths = frozenset(getattr(description, "possible_length", ()) or ())
    return _Pattern(lengths, re.compile(text))


def _region(metadata: PhoneMetadata) -> _Region:
    names = list(_TYPE_DESCRIPTIONS)
    if not metadata.same_mobile_and_fixed_line_pattern:
        names.append("mobile")
    types = tuple(p for p in (_pattern(getattr(metadata, n)) for n in names) if p is not None)
    leading = metadata.leading_digits
    return _Region(
        leading_digits=re.compile(leading) if leading is not None else None,
        general=_pattern(metadata.general_desc),
        types=types,
        non_geographical=tuple(
            p for p in (_pattern(getattr(metadata, n)) for n in _NON_GEOGRAPHICAL) if p is not None
        ),
        fixed_line=_pattern(metadata.fixed_line),
        same_mobile_and_fixed_line=bool(metadata.same_mobile_and_fixed_line_pattern),
    )


@cache
def _regions(country_code: int) -> tuple[_Region, ...] | None:
    """The calling code's regions in the library's order; None to defer to the library."""
    codes = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not codes or REGION_CODE_FOR_NON_GEO_ENTITY in codes:
        return None
    regions = []
    for code in codes:
        metadata = PhoneMetadata.metadata_for_region(code.upper(), None)
        if metadata is None:
            return None
        regions.append(_region(metadata))
    return tuple(regions)


def is_valid_e164(country_code: int, national: str) -> bool:
    """Whether +`country_code` `national` is a valid number (digits only, no leading zero)."""
    regions = _regions(country_code)
    if regions is None:
        number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
        return bool(phonenumbers.is_valid_number(number))
    if len(regions) == 1:
        return regions[0].is_valid(national)
    for region in regions:  # the library's region_code_for_number, then that region's check
        if region.leading_digits is not None:
            if region.leading_digits.match(national):
                return region.is_valid(national)
        elif region.is_valid(national):
            return True
    return False


def _region_of(regions: tuple[_Region, ...], national: str) -> _Region | None:
    """The library's region_code_for_number: the only region, or the first whose leading
    digits match, or (without leading digits) the first the number is valid in."""
    if len(regions) == 1:
        return regions[0]
    for region in regions:
        if region.leading_digits is not None:
            if region.leading_digits.match(national):
                return region
        elif region.is_valid(national):
            return region
    return None


@cache
def _geographical_mobiles(country_code: int) -> bool:
    return bool(
        phonenumbers.is_number_type_geographical(phonenumbers.PhoneNumberType.MOBILE, country_code)
    )


def is_geographical_e164(country_code: int, national: str) -> bool | None:
    """For a number `is_valid_e164` accepts: whether its type (fixed line, mobile, toll
    free …) is tied to a place, as the library's `is_number_type_geographical(number_type())`
    says. None where the compiled patterns defer to the library (non-geographic codes)."""
    regions = _regions(country_code)
    if regions is None:
        return None
    region = _region_of(regions, national)
    if region is None:
        return None
    return region.is_geographical(national, _geographical_mobiles(country_code))
