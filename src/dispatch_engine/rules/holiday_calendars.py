"""Public-holiday calendars of the maintained `holidays` package, as pure cached functions.

The package computes each country's holidays from rules written in code (fixed dates, Easter,
lunar calendars, "observed" substitutes): no network, no clock. Like `zoneinfo`, which reads
the time-zone database, it reads only files of its own package (its version's metadata when
imported, a translation catalogue for the names), so the answer depends on nothing but the
arguments and the installed version. Each (country, subdivision, year) is worked out once
per process and kept (`lru_cache`): a planner asks for the same few years again and again.

A year a calendar has no rules for (the package knows some moving religious holidays only
for a range of years) has no holidays. Names are asked for in US English (the package keeps
a country's own names when it has no translation), so they do not depend on the locale.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import date
from functools import lru_cache
from types import MappingProxyType

import holidays as _holidays

__all__ = [
    "canonical_country",
    "canonical_subdivision",
    "holiday_dates",
    "holiday_names",
    "shortened",
]

_NAMES_LANGUAGE = "en_US"
#: How many valid codes an error message lists before it says "… (N in all)".
_LISTED = 12


@lru_cache(maxsize=1)
def _supported() -> Mapping[str, tuple[str, ...]]:
    """ISO 3166-1 alpha-2 code → the subdivision codes the package knows for it."""
    countries = _holidays.list_supported_countries(include_aliases=False)
    return MappingProxyType(
        {code: tuple(subdivisions) for code, subdivisions in countries.items() if len(code) == 2}
    )


def shortened(codes: tuple[str, ...] | list[str], listed: int = _LISTED) -> str:
    """`A, B, C, … (40 in all)`: a list of valid codes short enough for an error message."""
    if len(codes) <= listed:
        return ", ".join(codes)
    return f"{', '.join(codes[:listed])}, … ({len(codes)} in all)"


def canonical_country(code: str) -> str:
    """The country code as stored (upper case); ValueError naming the valid ones."""
    countries = _supported()
    canonical = code.strip().upper() if isinstance(code, str) else ""
    if canonical not in countries:
        raise ValueError(
            f"{code!r} is not a country with a public-holiday calendar; use an ISO 3166-1 "
            f"alpha-2 code: {shortened(sorted(countries))}"
        )
    return canonical


def canonical_subdivision(country: str, code: str | None) -> str | None:
    """The subdivision code as the package spells it (matched case-insensitively), or None
    for the country's national holidays; ValueError naming the valid ones."""
    if code is None:
        return None
    subdivisions = _supported()[canonical_country(country)]
    wanted = code.strip().casefold() if isinstance(code, str) else ""
    for known in subdivisions:
        if known.casefold() == wanted:
            return known
    if not subdivisions:
        raise ValueError(f"{country} has no subdivisions: leave subdivision out")
    raise ValueError(
        f"{code!r} is not a subdivision of {country}; valid: {shortened(subdivisions)}"
    )


@lru_cache(maxsize=1024)
def holiday_names(country: str, subdivision: str | None, year: int) -> Mapping[date, str]:
    """The public holidays (observed days included) of one year: date → name."""
    with warnings.catch_warnings():
        # A few calendars (moving religious holidays) are known for some years only; outside
        # them the package warns and has no holidays, which is the answer we use.
        warnings.simplefilter("ignore", UserWarning)
        calendar = _holidays.country_holidays(
            country, subdiv=subdivision, years=year, language=_NAMES_LANGUAGE
        )
        days = sorted(calendar.items())
    return MappingProxyType({day: str(name) for day, name in days})


@lru_cache(maxsize=1024)
def holiday_dates(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """The dates of `holiday_names`, as a set (what the planner asks day by day)."""
    return frozenset(holiday_names(country, subdivision, year))
