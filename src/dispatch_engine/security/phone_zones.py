"""The one time zone phonenumbers gives a mobile number, or None (issue 22, item 5).

The decision is the library's: `phonenumbers.timezone.time_zones_for_number`, used only
when it names exactly one zone (+33 France: Europe/Paris; a +44 mobile: London, Jersey,
Guernsey and the Isle of Man, so none). It looks the number's longest prefix up in its
time-zone table when the number's type is geographical (fixed line, or a mobile in the
few countries whose mobiles are), and the calling code's entry otherwise. Geographic
numbers of a calling code spread over zones get their area's zone (+1 212: New York);
toll-free and other non-geographic numbers get the whole country's list.

Ingest asks this for every contact with a mobile and no `time_zone`, so it must stay cheap
next to the row's other work (~1 µs rather than the library's ~30 µs of parse and type):

* for most calling codes (185 of 215) every number gets the same answer: worked out once
  per calling code from the table;
* otherwise the longest-prefix answer and the calling code's are looked up (dict reads),
  and only when they differ does the number's type decide, from the compiled patterns of
  security/phone_validity.py;
* numbers the compiled patterns do not cover (a national number with a leading zero,
  non-geographic calling codes) go to the library itself.

A test compares this with the library over every example number and random digits.
"""

from __future__ import annotations

from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE
from phonenumbers.timezone import UNKNOWN_TIMEZONE, time_zones_for_number
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from dispatch_engine.security.phone_validity import is_geographical_e164

__all__ = ["phone_time_zone"]

_UNKNOWN: tuple[str, ...] = (UNKNOWN_TIMEZONE,)
# zoneinfo loads these keys, but they do not name a fixed IANA zone.
_REJECTED_ZONE_KEYS = frozenset({"localtime", "posixrules", "Factory", UNKNOWN_TIMEZONE})


def phone_time_zone(e164: str) -> str | None:
    """The one IANA zone phonenumbers gives this valid number (canonical E.164, as
    `normalize_phone` returns it), or None when it gives several or none."""
    digits = e164[1:]
    for size in (1, 2, 3):
        code = int(digits[:size]) if digits[:size].isdigit() else 0
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    constant, answer = _calling_code_plan(code)
    if constant:
        return answer
    geographic = _longest_prefix(digits, _key_sizes(code))
    country = _country_level(code)
    if geographic == country:
        return _one_zone(geographic)
    one_geographic, one_country = _one_zone(geographic), _one_zone(country)
    if one_geographic is None and one_country is None:
        return None  # whichever the type picks, it is not one zone
    national = digits[size:]
    geographical = None if national.startswith("0") else is_geographical_e164(code, national)
    if geographical is None:
        return _library(e164)
    return one_geographic if geographical else one_country


def _library(e164: str) -> str | None:
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return _one_zone(tuple(time_zones_for_number(number)))


@cache
def _calling_code_plan(code: int) -> tuple[bool, str | None]:
    """(True, answer) when every number of the calling code gets that answer: every table
    entry under the code, the entry a number matching none of them falls back to, and the
    code's own entry (for non-geographical types) are one and the same."""
    prefix = str(code)
    answers = {zones for key, zones in TIMEZONE_DATA.items() if key.startswith(prefix)}
    answers.add(_longest_prefix(prefix, _ALL_SIZES))
    answers.add(_country_level(code))
    if len(answers) == 1:
        return True, _one_zone(answers.pop())
    if all(_one_zone(zones) is None for zones in answers):
        return True, None
    return False, None


_ALL_SIZES = tuple(range(TIMEZONE_LONGEST_PREFIX, 0, -1))


@cache
def _key_sizes(code: int) -> tuple[int, ...]:
    """The lengths of the table's keys a number of this calling code can match, longest
    first: the only prefixes worth trying (+1: 4 digits or the code itself, not 9 to 1)."""
    prefix = str(code)
    sizes = {len(key) for key in TIMEZONE_DATA if key.startswith(prefix) or prefix.startswith(key)}
    return tuple(sorted(sizes, reverse=True))


def _longest_prefix(digits: str, sizes: tuple[int, ...]) -> tuple[str, ...]:
    """`time_zones_for_geographical_number`: the entry of the longest prefix in the table."""
    for size in sizes:
        zones = TIMEZONE_DATA.get(digits[:size])
        if zones is not None:
            return tuple(zones)
    return _UNKNOWN


@cache
def _country_level(code: int) -> tuple[str, ...]:
    """The library's `_country_level_time_zones_for_number`, prefix arithmetic included."""
    text = str(code)
    for size in range(TIMEZONE_LONGEST_PREFIX, 0, -1):
        zones = TIMEZONE_DATA.get(text[: 1 + size])
        if zones is not None:
            return tuple(zones)
    return _UNKNOWN


def _one_zone(zones: tuple[str, ...]) -> str | None:
    if len(zones) != 1:
        return None
    return zones[0] if _loadable(zones[0]) else None


@lru_cache(maxsize=1024)
def _loadable(key: str) -> bool:
    if key in _REJECTED_ZONE_KEYS:
        return False
    try:
        ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
