"""Shared request/response pieces."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from dispatch_engine.schemas.durations import parse_duration

_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Times the API takes lie in these years: Python cannot convert a time at the very ends of
#: its range (year 1, year 9999) to UTC, nor add a delay to it, and asyncpg converts to UTC.
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
#: The largest value an `integer` column holds (PostgreSQL refuses more; a 500 otherwise).
MAX_INT32 = 2**31 - 1
MAX_DURATION_DAYS = 3650


def _account_id(value: str) -> str:
    if not _ACCOUNT_ID.match(value):
        raise ValueError(
            "account ids are 1-64 characters: letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return value


def _duration(value: str) -> str:
    """At most ten years: delays and validities are seconds in an `integer` column (68 years
    at most) and are added to times, which must stay within the years Python reaches."""
    if parse_duration(value) > MAX_DURATION_DAYS * 86_400:
        raise ValueError(f"durations are at most {MAX_DURATION_DAYS} days (P{MAX_DURATION_DAYS}D)")
    return value.strip().upper()


def _utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999: outside the range anyway
        utc = LATEST
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be between the years {EARLIEST.year} and {LATEST.year}")
    return utc


AccountId = Annotated[str, AfterValidator(_account_id)]
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc)]
"""RFC 3339 with an offset (naive times are refused), normalised to UTC, years 1000-9000."""
Duration = Annotated[
    str,
    AfterValidator(_duration),
    Field(description="ISO 8601 duration, e.g. PT1H or P3D", examples=["P3D"]),
]


class StrictModel(BaseModel):
    """Request bodies refuse unknown fields so typos are errors, not silent no-ops."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
