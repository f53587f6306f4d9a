"""Lineup delays and the one function that turns a delay into a due time.

ISO 8601 distinguishes a nominal day (``P1D``) from 24 hours (``PT24H``), and so do we:

* days and weeks are **calendar days**: they keep the local wall-clock time in the zone the
  business window is read in (the policy's, or the contact's when the policy uses it). A
  reminder one day after Saturday 16:00 EST goes out on Sunday at 16:00 EDT, 23 hours
  later, because the clocks sprang forward in between;
* hours, minutes and seconds are **exact elapsed time**;
* a mixed delay such as ``P1DT2H`` is one calendar day, then two exact hours.

Where the wall-clock time a calendar day lands on does not exist (a spring-forward gap), the
due time is the first real instant after the gap; where it exists twice (a fall-back
overlap), the first occurrence (``fold=0``). Both come from
:func:`dispatch_engine.rules.business_hours.local_to_utc`, as windows do.

:func:`due_time` is used by everything that schedules a message: the first message of an
upload (ingest), the next step after a send or a skip (delivery), the re-timing of waiting
messages when a delay is edited (policies), and the preview. Lineup validation counts a
nominal day as 24 hours (:attr:`Delay.nominal_seconds`, see :mod:`dispatch_engine.rules.lineup`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from dispatch_engine.rules.business_hours import load_zone, local_to_utc

__all__ = ["DAY_SECONDS", "Delay", "due_time"]

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Delay:
    """``days`` calendar days (weeks counted as 7), then ``seconds`` of exact time."""

    days: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        for name, value in (("days", self.days), ("seconds", self.seconds)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"delay {name} must be a non-negative integer, not {value!r}")

    @property
    def nominal_seconds(self) -> int:
        """Its length with every calendar day counted as 24 hours (what validation uses:
        the real day is 23 or 25 hours long across a DST change)."""
        return self.days * DAY_SECONDS + self.seconds

    def __add__(self, other: Delay) -> Delay:
        return Delay(self.days + other.days, self.seconds + other.seconds)


def due_time(base: datetime, delay: Delay, time_zone: str) -> datetime:
    """When a message whose delay counts from ``base`` comes due, as aware UTC.

    ``time_zone`` is the IANA key the business window is read in (see
    :func:`dispatch_engine.rules.business_hours.window_zone`); it matters only for calendar
    days. Raises ValueError for a naive ``base`` or an unknown zone.
    """
    if not isinstance(base, datetime):
        raise TypeError(f"base must be a datetime, not {type(base).__name__}")
    if base.tzinfo is None or base.utcoffset() is None:
        raise ValueError(f"base must be timezone-aware, got naive {base.isoformat()}")
    # Normalised to UTC before the memo: aware datetimes that share a zone compare by wall
    # time and ignore `fold`, so two instants of a fall-back overlap would meet in it.
    return _due_time(base.astimezone(UTC), delay, time_zone)


@lru_cache(maxsize=4096)
def _due_time(base: datetime, delay: Delay, time_zone: str) -> datetime:
    """Memoised: a delivery round schedules every next step at one instant, so a batch asks
    the same few (base, delay, zone) again and again."""
    due = base
    if delay.days:
        zone = load_zone(time_zone)
        if zone is None:
            raise ValueError(f"unknown IANA time zone {time_zone!r}")
        wall = base.astimezone(zone).replace(tzinfo=None) + timedelta(days=delay.days)
        due = local_to_utc(wall, zone, fold=0)
    return due + timedelta(seconds=delay.seconds)
