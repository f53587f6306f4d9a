"""Business-hours windows for Delivery Policies.

A Delivery Policy may only send survey invitations inside its "business rules": wall-clock
hour ranges on given weekdays, read in an IANA time zone.  This module answers two questions
for the scheduler, without ever reading the clock itself (callers pass every instant in):

* :func:`is_open` - may a message go out at this instant?
* :func:`next_send_time` - if not, when is the earliest instant it may?

A week of hours can be broken by *closed days*: explicit local dates and a public-holiday
calendar (:class:`HolidayCalendar`, from :mod:`dispatch_engine.rules.holiday_calendars`). A
closed day behaves like a day with no hours: a message that falls on it waits for the next
opening. Closed days are local dates of the zone the window is read in.

Everything is computed on absolute (UTC) instants.  Wall-clock ranges are turned into UTC
intervals per local date with :mod:`zoneinfo`, which is where the DST rules live:

* a window boundary that falls into a spring-forward gap maps to the first real instant after
  the gap, so a window never opens earlier than its wall time intends;
* in a fall-back overlap a window *start* uses the first occurrence (``fold=0``) and a window
  *end* the second occurrence (``fold=1``), so the window covers all the real time that the
  wall clock shows as inside it.

All comparisons are made on UTC datetimes: Python compares two datetimes that share a
``ZoneInfo`` by wall time and ignores ``fold``, which would be wrong around fall-back.

:func:`local_to_utc` is the one way a wall-clock time becomes an instant here (windows, and
the calendar-day delays of :mod:`dispatch_engine.rules.delays`): a time in a gap moves to the
gap's end, and ``fold`` picks the occurrence in an overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatch_engine.rules.holiday_calendars import (
    canonical_country,
    canonical_subdivision,
    holiday_dates,
    holiday_names,
)

__all__ = [
    "DAY_NAMES",
    "MAX_CLOSED_RUN_DAYS",
    "BusinessHours",
    "BusinessHoursError",
    "HolidayCalendar",
    "TimeRange",
    "WindowDecision",
    "is_open",
    "load_zone",
    "local_to_utc",
    "next_send_time",
    "order_key",
    "window_zone",
]

#: Day keys accepted by :meth:`BusinessHours.from_spec`, index 0 = Monday (``date.weekday()``).
DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

MINUTES_PER_DAY = 24 * 60

# A week repeats every 7 local days, but a DST gap can swallow the only window of a week, so
# look two weeks (plus slack) ahead before concluding that no window exists.
_SEARCH_DAYS = 16

#: Closed days may not take every opening away for this long (a policy must open at least
#: once a year), so the search for the next opening stays bounded: a policy with closed days
#: looks this many days further ahead, and never loops.
MAX_CLOSED_RUN_DAYS = 366
_SEARCH_DAYS_WITH_CLOSED = MAX_CLOSED_RUN_DAYS + _SEARCH_DAYS

_HHMM = re.compile(r"([0-9]{1,2}):([0-9]{2})")

# Keys that zoneinfo can load but that do not name a fixed IANA zone: "localtime" is whatever
# the host is set to, which must never silently decide when a policy sends.
_REJECTED_ZONE_KEYS = frozenset({"localtime"})


class BusinessHoursError(ValueError):
    """Invalid business hours.

    ``field`` names the offending input (``time_zone``, ``days``, ``days.mon[1]``) and ``reason``
    is a human sentence, so an API can point the policy author at the exact mistake.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class TimeRange:
    """A wall-clock range ``[start, end)`` in minutes after local midnight.

    ``end`` may be 1440 ("24:00"), meaning the next local midnight, so a day can be open to its
    very end and join up with a following day that opens at 00:00.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        for name, value in (("start", self.start), ("end", self.end)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise BusinessHoursError(
                    name, f"must be an integer number of minutes, not {value!r}"
                )
        if not 0 <= self.start < MINUTES_PER_DAY:
            raise BusinessHoursError("start", f"must be within 00:00..23:59, got {self.start}")
        if not self.start < self.end <= MINUTES_PER_DAY:
            raise BusinessHoursError(
                "end",
                f"must be after start ({_fmt(self.start)}) and at most 24:00, got {self.end}",
            )

    def __str__(self) -> str:
        return f"{_fmt(self.start)}-{_fmt(self.end)}"


@dataclass(frozen=True)
class HolidayCalendar:
    """A country's public holidays (its ISO 3166-1 alpha-2 code), optionally with those of
    one subdivision (state, province …): every such day is closed."""

    country: str
    subdivision: str | None = None

    def __post_init__(self) -> None:
        try:
            country = canonical_country(self.country)
        except ValueError as exc:
            raise BusinessHoursError("holidays.country", str(exc)) from None
        try:
            subdivision = canonical_subdivision(country, self.subdivision)
        except ValueError as exc:
            raise BusinessHoursError("holidays.subdivision", str(exc)) from None
        object.__setattr__(self, "country", country)
        object.__setattr__(self, "subdivision", subdivision)

    def name_of(self, day: date) -> str | None:
        """The holiday's name when ``day`` is one."""
        return holiday_names(self.country, self.subdivision, day.year).get(day)

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, date):
            return False
        return day in holiday_dates(self.country, self.subdivision, day.year)


@dataclass(frozen=True)
class BusinessHours:
    """Open hours per weekday, read in ``time_zone``, and the days that are closed anyway.

    ``days`` has exactly 7 entries (index 0 = Monday); each entry holds sorted, non-overlapping
    ranges and an empty tuple means closed all day.  ``closed_dates`` (local dates) and the
    ``holidays`` calendar close whole days.  Construction validates all of this, that some
    time in the week is open, and that closed days never take every opening away for
    :data:`MAX_CLOSED_RUN_DAYS` days, so :func:`next_send_time` always has an answer within
    a bounded search.
    """

    time_zone: str
    days: tuple[tuple[TimeRange, ...], ...]
    closed_dates: frozenset[date] = frozenset()
    holidays: HolidayCalendar | None = None

    def __post_init__(self) -> None:
        if _load_zone(self.time_zone) is None:
            raise BusinessHoursError("time_zone", f"unknown IANA time zone {self.time_zone!r}")
        if not isinstance(self.days, tuple) or len(self.days) != len(DAY_NAMES):
            raise BusinessHoursError("days", "must be a tuple of exactly 7 days, Monday first")
        for day_name, ranges in zip(DAY_NAMES, self.days, strict=True):
            if not isinstance(ranges, tuple):
                raise BusinessHoursError(f"days.{day_name}", "must be a tuple of TimeRange")
            previous: TimeRange | None = None
            for index, time_range in enumerate(ranges):
                field = f"days.{day_name}[{index}]"
                if not isinstance(time_range, TimeRange):
                    raise BusinessHoursError(field, "must be a TimeRange")
                if previous is not None and time_range.start < previous.end:
                    raise BusinessHoursError(
                        field,
                        f"{time_range} overlaps or precedes {previous}; "
                        "ranges must be sorted and non-overlapping",
                    )
                previous = time_range
        if not any(self.days):
            raise BusinessHoursError("days", "the week has no open time at all")
        if not isinstance(self.closed_dates, frozenset) or not all(
            type(day) is date for day in self.closed_dates
        ):
            raise BusinessHoursError("closed_dates", "must be a frozenset of dates")
        if self.holidays is not None and not isinstance(self.holidays, HolidayCalendar):
            raise BusinessHoursError("holidays", "must be a HolidayCalendar")
        stretch = _closed_stretch(self)
        if stretch is not None:
            first, last = stretch
            raise BusinessHoursError(
                "closed_dates",
                f"closed days leave no opening from {first.isoformat()} to {last.isoformat()} "
                f"({(last - first).days + 1} days or more); a policy must open at least once "
                f"in every {MAX_CLOSED_RUN_DAYS} days",
            )

    def __hash__(self) -> int:
        """Worked out once: the window memo hashes the hours for every message it serves,
        and hashing seven days of ranges field by field each time was a hot-path cost."""
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = hash(
                (self.time_zone, self.days, self.closed_dates, self.holidays)
            )
        return cached

    @property
    def has_closed_days(self) -> bool:
        return bool(self.closed_dates) or self.holidays is not None

    def closed_reason(self, day: date) -> Literal["closed_date", "holiday"] | None:
        """``closed_date`` or ``holiday`` when the local date ``day`` is closed, else None."""
        if day in self.closed_dates:
            return "closed_date"
        if self.holidays is not None and day in self.holidays:
            return "holiday"
        return None

    def is_closed(self, day: date) -> bool:
        return day in self.closed_dates or (self.holidays is not None and day in self.holidays)

    @classmethod
    def default(cls, time_zone: str = "UTC") -> BusinessHours:
        """Monday to Friday, all day: the policy default when no business rules are set."""
        all_day = (TimeRange(0, MINUTES_PER_DAY),)
        return cls(time_zone=time_zone, days=(all_day,) * 5 + ((), ()))

    @classmethod
    def from_spec(
        cls,
        time_zone: str,
        days: Mapping[str, Sequence[tuple[str, str]]],
        closed_dates: Iterable[date] = (),
        holidays: HolidayCalendar | None = None,
    ) -> BusinessHours:
        """Build from the policy's wire form, e.g. ``{"mon": [("08:00", "17:00")]}``.

        Keys are ``mon``..``sun``; a missing day is closed.  Ranges may be given in any order
        and are sorted; touching ranges (``12:00`` end, ``12:00`` start) are allowed.  Errors
        name the offending field so an API can report it; indices refer to the input order.
        ``closed_dates`` and ``holidays`` close whole local dates.
        """
        if _load_zone(time_zone) is None:
            raise BusinessHoursError("time_zone", f"unknown IANA time zone {time_zone!r}")
        if not isinstance(days, Mapping):
            raise BusinessHoursError("days", "must be a mapping of day name to ranges")
        for key in days:
            if key not in DAY_NAMES:
                raise BusinessHoursError(
                    f"days.{key}", f"unknown day {key!r}; expected one of {', '.join(DAY_NAMES)}"
                )

        week: list[tuple[TimeRange, ...]] = []
        for day_name in DAY_NAMES:
            spec = days.get(day_name, ())
            if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):
                raise BusinessHoursError(f"days.{day_name}", "must be a list of (start, end) pairs")
            parsed = [
                (_parse_range(f"days.{day_name}[{index}]", pair), index)
                for index, pair in enumerate(spec)
            ]
            parsed.sort(key=lambda item: (item[0].start, item[0].end))
            for (earlier, _), (later, later_index) in pairwise(parsed):
                if later.start < earlier.end:
                    raise BusinessHoursError(
                        f"days.{day_name}[{later_index}]", f"{later} overlaps {earlier}"
                    )
            week.append(tuple(time_range for time_range, _ in parsed))

        if not any(week):
            raise BusinessHoursError("days", "the week has no open time at all")
        return cls(
            time_zone=time_zone,
            days=tuple(week),
            closed_dates=frozenset(closed_dates),
            holidays=holidays,
        )


@dataclass(frozen=True)
class WindowDecision:
    """Where a message lands: when to send, and the window that instant belongs to.

    ``window_start``/``window_end`` are the single configured range (on its local date) that
    contains ``send_at``; touching ranges are separate windows but leave no closed gap.
    ``closed_days`` are the local dates whose opening hours (still ahead at ``due``) were
    skipped because the day was closed, in order.
    """

    send_at: datetime
    deferred: bool
    window_start: datetime
    window_end: datetime
    local_zone: str
    closed_days: tuple[date, ...] = ()


def next_send_time(
    due: datetime, hours: BusinessHours, zone_override: str | None = None
) -> WindowDecision:
    """Earliest instant ``>= due`` inside an open window, as aware UTC.

    ``zone_override`` is the contact's own zone; it replaces ``hours.time_zone`` when it is a
    valid IANA zone, and an invalid one falls back to the policy zone rather than failing the
    send (contact data is less trustworthy than a validated policy).  Raises ``ValueError`` for
    a naive ``due``, since guessing its zone could send at the wrong hour.
    """
    due_utc = _to_utc(due, "due")
    zone_key, zone = _resolve_zone(hours, zone_override)
    skipped: list[date] = []
    for day, window_start, window_end, closed in _windows_from(due_utc, hours, zone):
        if window_end <= due_utc:
            continue
        if closed:  # a closed day has no hours: its windows are skipped
            if not skipped or skipped[-1] != day:
                skipped.append(day)
            continue
        # Window starts never decrease, so the first window ending after `due` either contains
        # it or is the next one to open: no later window can start earlier.
        deferred = window_start > due_utc
        return WindowDecision(
            send_at=window_start if deferred else due_utc,
            deferred=deferred,
            window_start=window_start,
            window_end=window_end,
            local_zone=zone_key,
            closed_days=tuple(skipped),
        )
    raise BusinessHoursError(
        "days", f"no open window within {_search_days(hours)} days of {due_utc.isoformat()}"
    )


def window_zone(hours: BusinessHours, zone_override: str | None = None) -> str:
    """The IANA key the window is read in: the contact's zone when it is given and valid,
    else the policy's (as :func:`next_send_time` decides it). Calendar-day delays count in
    the same zone."""
    return _resolve_zone(hours, zone_override)[0]


def local_to_utc(wall: datetime, zone: tzinfo, *, fold: int = 0) -> datetime:
    """The UTC instant of a naive wall-clock time in ``zone``.

    A wall time inside a spring-forward gap does not exist: it maps to the first real
    instant after the gap. In a fall-back overlap ``fold`` picks the occurrence (0: the
    first, 1: the second).
    """
    if wall.tzinfo is not None:
        raise ValueError(f"wall must be a naive local time, got {wall.isoformat()}")
    instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # Transitions fall on whole seconds: the gap's end is found from the whole second.
    return _gap_end(wall.replace(microsecond=0), zone)


def is_open(at: datetime, hours: BusinessHours, zone_override: str | None = None) -> bool:
    """Whether a message may be sent exactly at ``at`` (same zone rules as next_send_time)."""
    return not next_send_time(at, hours, zone_override).deferred


def order_key(original_due: datetime, message_id: str) -> tuple[datetime, str]:
    """Sort key that keeps deferred messages in the order they originally came due.

    Deferral collapses many due times onto one window start; sorting by the original due
    instant (normalised to UTC, ties broken by id) releases them first-come, first-served.
    """
    return (_to_utc(original_due, "original_due"), message_id)


# --- internals -------------------------------------------------------------------------------


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _to_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def load_zone(key: object) -> ZoneInfo | None:
    """The zone for an IANA key, or None: bad keys are data errors, not crashes."""
    return _load_zone(key)


def _load_zone(key: object) -> ZoneInfo | None:
    if not isinstance(key, str) or not key or key in _REJECTED_ZONE_KEYS:
        return None
    return _load_zone_cached(key)


@lru_cache(maxsize=256)
def _load_zone_cached(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _resolve_zone(hours: BusinessHours, zone_override: str | None) -> tuple[str, ZoneInfo]:
    if zone_override is not None:
        override = _load_zone(zone_override)
        if override is not None:
            return zone_override, override
    zone = _load_zone(hours.time_zone)
    if zone is None:  # pragma: no cover - BusinessHours validates its zone on construction
        raise BusinessHoursError("time_zone", f"unknown IANA time zone {hours.time_zone!r}")
    return hours.time_zone, zone


def _search_days(hours: BusinessHours) -> int:
    return _SEARCH_DAYS_WITH_CLOSED if hours.has_closed_days else _SEARCH_DAYS


def _windows_from(
    due_utc: datetime, hours: BusinessHours, zone: ZoneInfo
) -> Iterator[tuple[date, datetime, datetime, bool]]:
    """Non-empty UTC windows in order of start, from the local day before ``due`` onward,
    each with its local date and whether that date is closed.

    The previous local day is included because its window can run past local midnight (24:00
    resolved into a DST gap, or an overlap at midnight).
    """
    first_day = due_utc.astimezone(zone).date() - timedelta(days=1)
    check_closed = hours.has_closed_days
    for offset in range(_search_days(hours) + 2):
        try:
            day = first_day + timedelta(days=offset)
        except OverflowError:
            return
        ranges = hours.days[day.weekday()]
        if not ranges:
            continue
        closed = check_closed and hours.is_closed(day)
        for time_range in ranges:
            try:
                start = _wall_to_utc(day, time_range.start, zone, fold=0)
                end = _wall_to_utc(day, time_range.end, zone, fold=1)
            except OverflowError:
                return
            if start < end:  # a window entirely inside a DST gap does not exist that day
                yield day, start, end, closed


def _wall_to_utc(day: date, minutes: int, zone: tzinfo, *, fold: int) -> datetime:
    """UTC instant of a wall time on ``day``; a time inside a DST gap maps to the gap's end."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minutes)  # 1440 -> next midnight
    return local_to_utc(wall, zone, fold=fold)


def _closed_stretch(hours: BusinessHours) -> tuple[date, date] | None:
    """The first stretch of at least :data:`MAX_CLOSED_RUN_DAYS` local dates without any
    opening (closed dates, holidays and weekly closed days together), or None.

    Only explicit closed dates can make one (a holiday calendar closes a few days at a
    time), so the walk starts from them and visits each date of a stretch once.
    """
    if not hours.closed_dates:
        return None

    def no_opening(day: date) -> bool:
        return not hours.days[day.weekday()] or hours.is_closed(day)

    covered: date | None = None
    for seed in sorted(hours.closed_dates):
        if covered is not None and seed <= covered:
            continue
        first = last = seed
        try:
            while (last - first).days < MAX_CLOSED_RUN_DAYS and no_opening(
                first - timedelta(days=1)
            ):
                first -= timedelta(days=1)
            while (last - first).days + 1 < MAX_CLOSED_RUN_DAYS and no_opening(
                last + timedelta(days=1)
            ):
                last += timedelta(days=1)
        except OverflowError:  # at the ends of the calendar: nothing lies beyond
            pass
        if (last - first).days + 1 >= MAX_CLOSED_RUN_DAYS:
            return first, last
        covered = last
    return None


def _gap_end(wall: datetime, zone: tzinfo) -> datetime:
    """First real instant after the spring-forward gap that swallows ``wall``.

    Read with the pre-transition offset (fold=0) the wall time lands after the transition, and
    with the post-transition offset (fold=1) before it; bisect between the two on whole
    seconds (tz transitions are whole seconds) for the first instant whose wall time is past
    ``wall``.
    """
    a = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    b = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(a, b), max(a, b)
    low_s, high_s = 0, int((high - low).total_seconds())
    while high_s - low_s > 1:
        mid_s = (low_s + high_s) // 2
        probe = low + timedelta(seconds=mid_s)
        if probe.astimezone(zone).replace(tzinfo=None) > wall:
            high_s = mid_s
        else:
            low_s = mid_s
    return low + timedelta(seconds=high_s)


def _parse_range(field: str, pair: object) -> TimeRange:
    if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise BusinessHoursError(field, "must be a (start, end) pair of 'HH:MM' strings")
    start = _parse_hhmm(field, "start", pair[0], allow_end_of_day=False)
    end = _parse_hhmm(field, "end", pair[1], allow_end_of_day=True)
    if start >= end:
        raise BusinessHoursError(field, f"start {_fmt(start)} must be before end {_fmt(end)}")
    return TimeRange(start, end)


def _parse_hhmm(field: str, which: str, text: object, *, allow_end_of_day: bool) -> int:
    if not isinstance(text, str):
        raise BusinessHoursError(field, f"{which} must be an 'HH:MM' string, not {text!r}")
    match = _HHMM.fullmatch(text)
    if match is None:
        raise BusinessHoursError(field, f"{which} {text!r} is not in 'HH:MM' form")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour == 24 and minute == 0:
        if allow_end_of_day:
            return MINUTES_PER_DAY
        raise BusinessHoursError(field, f"{which} cannot be 24:00; only an end may be")
    if hour > 23 or minute > 59:
        raise BusinessHoursError(field, f"{which} {text!r} is not a valid time of day")
    return hour * 60 + minute
