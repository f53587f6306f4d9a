"""Tests for closed days in dispatch_engine.rules.business_hours (issue 22, item 4): explicit
closed dates and a public-holiday calendar close whole local dates, a message rolls over to
the next opening, the skipped dates are reported, the search stays bounded, and bad
calendars are named field by field.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import holidays
import pytest

from dispatch_engine.rules.business_hours import (
    MAX_CLOSED_RUN_DAYS,
    BusinessHours,
    BusinessHoursError,
    HolidayCalendar,
    next_send_time,
)
from dispatch_engine.rules.holiday_calendars import (
    canonical_country,
    canonical_subdivision,
    holiday_dates,
    holiday_names,
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
ALL_WEEK = (*WEEKDAYS, "sat", "sun")


def z(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def office(
    zone: str = "Europe/Berlin",
    closed: tuple[date, ...] = (),
    holidays: HolidayCalendar | None = None,
    days: tuple[str, ...] = WEEKDAYS,
) -> BusinessHours:
    return BusinessHours.from_spec(
        zone, {d: [("08:00", "17:00")] for d in days}, closed_dates=closed, holidays=holidays
    )


def test_a_closed_date_behaves_like_a_day_without_hours() -> None:
    hours = office(closed=(date(2026, 3, 3),))  # Tuesday
    # Monday 18:00 Berlin: Tuesday is closed, so Wednesday 08:00.
    decision = next_send_time(z(2026, 3, 2, 17), hours)
    assert (decision.send_at, decision.deferred) == (z(2026, 3, 4, 7), True)
    assert decision.closed_days == (date(2026, 3, 3),)
    # During the closed day itself: deferred as well.
    decision = next_send_time(z(2026, 3, 3, 10), hours)
    assert decision.send_at == z(2026, 3, 4, 7)
    assert decision.closed_days == (date(2026, 3, 3),)
    # Not closed the day before or after; nothing skipped.
    assert next_send_time(z(2026, 3, 2, 10), hours).closed_days == ()
    assert next_send_time(z(2026, 3, 4, 10), hours).deferred is False
    assert hours.closed_reason(date(2026, 3, 3)) == "closed_date"
    assert hours.closed_reason(date(2026, 3, 4)) is None


def test_closed_days_are_dates_of_the_zone_the_window_is_read_in() -> None:
    hours = office(closed=(date(2026, 3, 3),))
    # Tuesday 10:00 in Tokyo is still Monday evening in Berlin, and Tuesday in Tokyo is closed
    # for a contact there: Wednesday 08:00 Tokyo.
    decision = next_send_time(z(2026, 3, 3, 1), hours, "Asia/Tokyo")
    assert decision.send_at == z(2026, 3, 3, 23)
    assert decision.local_zone == "Asia/Tokyo"
    assert decision.closed_days == (date(2026, 3, 3),)


def test_weekends_are_not_reported_as_skipped_closed_days() -> None:
    hours = office(closed=(date(2026, 3, 7), date(2026, 3, 9)))  # Saturday, Monday
    decision = next_send_time(z(2026, 3, 6, 17), hours)  # Friday 18:00 Berlin
    assert decision.send_at == z(2026, 3, 10, 7)  # Tuesday
    assert decision.closed_days == (date(2026, 3, 9),)  # Saturday has no hours anyway


def test_a_public_holiday_calendar_closes_its_days() -> None:
    bavaria = HolidayCalendar("DE", "BY")
    hours = office(holidays=bavaria, closed=(date(2026, 1, 7),))
    # Monday 5 January 18:00 Berlin: Tuesday 6 January is Epiphany in Bavaria, Wednesday a
    # closed date: Thursday 08:00.
    decision = next_send_time(z(2026, 1, 5, 17), hours)
    assert decision.send_at == z(2026, 1, 8, 7)
    assert decision.closed_days == (date(2026, 1, 6), date(2026, 1, 7))
    assert hours.closed_reason(date(2026, 1, 6)) == "holiday"
    assert bavaria.name_of(date(2026, 1, 6)) == "Epiphany"
    # Berlin (the state) does not keep Epiphany.
    berlin = office(holidays=HolidayCalendar("DE", "BE"))
    assert next_send_time(z(2026, 1, 6, 10), berlin).deferred is False
    # National holidays only, without a subdivision; Christmas over a year boundary.
    germany = office(holidays=HolidayCalendar("DE"))
    decision = next_send_time(z(2026, 12, 24, 17), germany)  # Thursday 18:00
    assert decision.send_at == z(2026, 12, 28, 7)  # Fri 25, Sat, Sun 27 → Monday
    assert decision.closed_days == (date(2026, 12, 25),)


def test_observed_substitute_days_are_closed_too() -> None:
    # 4 July 2026 is a Saturday: the United States observe it on Friday 3 July.
    hours = office("America/New_York", holidays=HolidayCalendar("US", "NY"))
    decision = next_send_time(z(2026, 7, 3, 14), hours)
    assert decision.send_at == z(2026, 7, 6, 12)
    assert decision.closed_days == (date(2026, 7, 3),)


def test_calendar_codes_are_checked_and_stored_canonically() -> None:
    calendar = HolidayCalendar("de", "by")
    assert (calendar.country, calendar.subdivision) == ("DE", "BY")
    assert canonical_country(" us ") == "US"
    assert canonical_subdivision("US", "ny") == "NY"
    with pytest.raises(BusinessHoursError) as country:
        HolidayCalendar("XX")
    assert country.value.field == "holidays.country"
    assert "in all" in country.value.reason  # the valid codes, shortened
    with pytest.raises(BusinessHoursError) as subdivision:
        HolidayCalendar("DE", "XX")
    assert subdivision.value.field == "holidays.subdivision"
    assert subdivision.value.reason.startswith("'XX' is not a subdivision of DE; valid: BB, BE")
    assert "in all" in subdivision.value.reason
    with pytest.raises(BusinessHoursError, match="leave subdivision out"):
        HolidayCalendar("AQ", "X")


def test_holiday_calendars_are_pure_and_cached() -> None:
    first = holiday_dates("DE", "BY", 2026)
    assert holiday_dates("DE", "BY", 2026) is first  # worked out once
    assert date(2026, 1, 6) in first and date(2026, 1, 6) not in holiday_dates("DE", "BE", 2026)
    assert holiday_names("DE", "BY", 2026)[date(2026, 12, 25)] == "Christmas Day"
    started = time.perf_counter()
    for _ in range(10_000):
        holiday_dates("DE", "BY", 2026)
    assert time.perf_counter() - started < 0.5
    # Years the package has no rules for have no holidays rather than an error.
    assert holiday_dates("DE", "BY", 1000) == frozenset()


def test_closed_days_take_part_in_the_hash_and_equality() -> None:
    plain, closed = office(), office(closed=(date(2026, 3, 3),))
    assert plain != closed and hash(plain) != hash(closed)
    assert office(closed=(date(2026, 3, 3),)) == closed
    assert hash(office(closed=(date(2026, 3, 3),))) == hash(closed)
    assert office(holidays=HolidayCalendar("DE")) != office(holidays=HolidayCalendar("DE", "BY"))


def test_closed_days_may_not_leave_a_policy_without_opening_for_a_year() -> None:
    start = date(2026, 3, 2)  # a Monday
    year = tuple(start + timedelta(days=n) for n in range(MAX_CLOSED_RUN_DAYS))
    with pytest.raises(BusinessHoursError) as error:
        office(closed=year, days=ALL_WEEK)
    assert error.value.field == "closed_dates"
    assert "2026-03-02" in error.value.reason
    # Weekly closed days count too: weekdays only, the weekends between them close nothing
    # more, but they join the closed weekdays into one stretch.
    weekdays_only = tuple(d for d in year if d.weekday() < 5)
    with pytest.raises(BusinessHoursError):
        office(closed=weekdays_only)
    # One day short of it is allowed, and the search finds the opening after it (bounded).
    short = year[:-1]
    hours = office(closed=short, days=ALL_WEEK)
    decision = next_send_time(z(2026, 3, 2, 10), hours)
    reopened = start + timedelta(days=MAX_CLOSED_RUN_DAYS - 1)
    assert decision.send_at == datetime(
        reopened.year, reopened.month, reopened.day, 7, tzinfo=UTC
    )  # 08:00 CET
    assert decision.closed_days == short


def test_the_search_for_an_opening_is_bounded() -> None:
    hours = office(closed=(date(2026, 3, 3),))
    # The guard that construction keeps from being reached: no window within the bound.
    never = BusinessHours.__new__(BusinessHours)
    object.__setattr__(never, "time_zone", "Europe/Berlin")
    object.__setattr__(never, "days", hours.days)
    object.__setattr__(
        never,
        "closed_dates",
        frozenset(date(2026, 3, 1) + timedelta(days=n) for n in range(800)),
    )
    object.__setattr__(never, "holidays", None)
    started = time.perf_counter()
    with pytest.raises(BusinessHoursError, match="no open window within 382 days"):
        next_send_time(z(2026, 3, 2, 10), never)
    assert time.perf_counter() - started < 1


def test_bad_closed_dates_are_refused() -> None:
    with pytest.raises(BusinessHoursError, match="frozenset of dates"):
        BusinessHours(
            time_zone="UTC",
            days=office().days,
            closed_dates=frozenset({datetime(2026, 1, 1)}),  # type: ignore[arg-type]
        )
    with pytest.raises(BusinessHoursError, match="HolidayCalendar"):
        BusinessHours(time_zone="UTC", days=office().days, holidays=("DE", "BY"))  # type: ignore[arg-type]


AUDIT_SCRIPT = """
import json, sys
seen = []
def hook(event, args):
    if event.startswith(("socket.", "urllib.", "http.", "subprocess.", "os.system")):
        seen.append([event, str(args[:1])])
    elif event == "open" and isinstance(args[0], str) and not args[0].endswith((".py", ".pyc")):
        seen.append([event, args[0]])
sys.addaudithook(hook)
from dispatch_engine.rules.holiday_calendars import holiday_names
for country, subdivision in (("DE", "BY"), ("US", "NY"), ("AU", "NSW")):
    holiday_names(country, subdivision, 2026)
print(json.dumps(seen))
"""


def test_the_holiday_package_uses_no_network_and_only_its_own_files() -> None:
    """What the rules layer allows itself besides pure code: reading data files that ship
    with a package (as zoneinfo reads the tz database), nothing else."""
    result = subprocess.run(
        [sys.executable, "-c", AUDIT_SCRIPT], capture_output=True, text=True, check=True
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert not [e for e in seen if e[0] != "open"], seen
    package = Path(holidays.__file__).resolve().parent
    for _, path in seen:
        resolved = Path(path).resolve()
        assert (
            package in resolved.parents  # its translation catalogues
            or resolved.parent.name.startswith("holidays-")  # its metadata (the version)
            or resolved.suffix == ".zip"  # the import system looking for modules
        ), path
    assert any(path.endswith(".mo") for _, path in seen)  # the audit hook did see files
