"""Tests for dispatch_engine.rules.delays (issue 22, item 3): `due_time` keeps the local
wall-clock time over calendar days and counts hours exactly, across both DST changes in a
northern (New York, Berlin) and a southern (Sydney) zone; gaps move forward, overlaps take
the first occurrence. Also the ISO 8601 reading of delays and how validation counts a day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch_engine.rules.delays import Delay, due_time
from dispatch_engine.rules.lineup import DAY, HOUR, delay_problems, total_delay, validity_problem
from dispatch_engine.schemas.durations import format_delay, parse_delay, parse_duration

P1D = Delay(days=1)
PT24H = Delay(seconds=24 * HOUR)


def z(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


# (zone, change, 16:00 local on the day before the change, the same wall time a day later)
DST_CASES = [
    ("America/New_York", "spring", z(2026, 3, 7, 21), z(2026, 3, 8, 20)),  # EST → EDT: 23 h
    ("America/New_York", "fall", z(2026, 10, 31, 20), z(2026, 11, 1, 21)),  # EDT → EST: 25 h
    ("Europe/Berlin", "spring", z(2026, 3, 28, 15), z(2026, 3, 29, 14)),  # CET → CEST
    ("Europe/Berlin", "fall", z(2026, 10, 24, 14), z(2026, 10, 25, 15)),  # CEST → CET
    ("Australia/Sydney", "spring", z(2026, 10, 3, 6), z(2026, 10, 4, 5)),  # AEST → AEDT
    ("Australia/Sydney", "fall", z(2026, 4, 4, 5), z(2026, 4, 5, 6)),  # AEDT → AEST
]
DST_IDS = [f"{zone}-{change}" for zone, change, _, _ in DST_CASES]


@pytest.mark.parametrize(("zone", "change", "base", "next_day"), DST_CASES, ids=DST_IDS)
def test_a_calendar_day_keeps_the_wall_clock_time_across_dst(
    zone: str, change: str, base: datetime, next_day: datetime
) -> None:
    assert base.astimezone(ZoneInfo(zone)).hour == 16
    due = due_time(base, P1D, zone)
    assert due == next_day
    assert due.tzinfo is UTC
    assert due.astimezone(ZoneInfo(zone)).replace(tzinfo=None) == (
        base.astimezone(ZoneInfo(zone)).replace(tzinfo=None) + timedelta(days=1)
    )
    assert due - base == timedelta(hours=23 if change == "spring" else 25)
    # 24 hours are 24 hours: the wall clock shows 17:00 or 15:00 instead.
    exact = due_time(base, PT24H, zone)
    assert exact == base + timedelta(hours=24)
    assert exact.astimezone(ZoneInfo(zone)).hour == (17 if change == "spring" else 15)
    # A week is seven calendar days, whichever day the change falls on.
    week = due_time(base - timedelta(days=6), Delay(days=7), zone)
    assert week.astimezone(ZoneInfo(zone)).hour == 16


def test_the_issue_example_saturday_16_est_to_sunday_16_edt() -> None:
    base = local("America/New_York", 2026, 3, 7, 16)  # Saturday, EST
    due = due_time(base, P1D, "America/New_York").astimezone(ZoneInfo("America/New_York"))
    assert due.isoformat() == "2026-03-08T16:00:00-04:00"


def test_a_mixed_delay_is_calendar_days_then_exact_time() -> None:
    # Saturday 01:00 EST + 1 day = Sunday 01:00 EST (before the 02:00 change), then 2 h
    # of real time = 04:00 EDT. "2 h, then a day" would be Sunday 03:00 EDT instead.
    base = local("America/New_York", 2026, 3, 7, 1)
    due = due_time(base, Delay(days=1, seconds=2 * HOUR), "America/New_York")
    assert due == z(2026, 3, 8, 8)
    assert due.astimezone(ZoneInfo("America/New_York")).hour == 4
    assert parse_delay("P1DT2H") == Delay(days=1, seconds=2 * HOUR)


@pytest.mark.parametrize(
    ("zone", "base", "gap_end"),
    [
        # 02:30 does not exist on the day the clocks spring forward: 03:00 local.
        ("America/New_York", local("America/New_York", 2026, 3, 7, 2, 30), z(2026, 3, 8, 7)),
        ("Europe/Berlin", local("Europe/Berlin", 2026, 3, 28, 2, 30), z(2026, 3, 29, 1)),
        ("Australia/Sydney", local("Australia/Sydney", 2026, 10, 3, 2, 30), z(2026, 10, 3, 16)),
    ],
)
def test_a_wall_time_in_a_gap_moves_to_the_first_valid_instant(
    zone: str, base: datetime, gap_end: datetime
) -> None:
    assert due_time(base, P1D, zone) == gap_end
    assert gap_end.astimezone(ZoneInfo(zone)).strftime("%H:%M") == "03:00"
    # Seconds and microseconds of the base do not push it past the gap's end.
    assert due_time(base + timedelta(seconds=59, microseconds=5), P1D, zone) == gap_end
    # Exact hours after the gap's end follow on from it.
    assert due_time(base, Delay(days=1, seconds=HOUR), zone) == gap_end + timedelta(hours=1)


@pytest.mark.parametrize(
    ("zone", "base", "first"),
    [
        # 01:30 happens twice on the day the clocks fall back: the first time (fold=0).
        ("America/New_York", local("America/New_York", 2026, 10, 31, 1, 30), z(2026, 11, 1, 5, 30)),
        ("Europe/Berlin", local("Europe/Berlin", 2026, 10, 24, 2, 30), z(2026, 10, 25, 0, 30)),
        ("Australia/Sydney", local("Australia/Sydney", 2026, 4, 4, 2, 30), z(2026, 4, 4, 15, 30)),
    ],
)
def test_a_wall_time_in_an_overlap_takes_its_first_occurrence(
    zone: str, base: datetime, first: datetime
) -> None:
    due = due_time(base, P1D, zone)
    assert due == first
    assert due.astimezone(ZoneInfo(zone)).fold == 0
    assert (due + timedelta(hours=1)).astimezone(ZoneInfo(zone)).replace(tzinfo=None) == (
        due.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    )  # an hour later the wall clock reads the same again: that was the first occurrence


def test_a_base_in_the_second_occurrence_counts_from_its_own_wall_time() -> None:
    # 01:30 EST (the second 01:30 of 1 November) + 1 day = 2 November 01:30 EST: 24 h.
    second = z(2026, 11, 1, 6, 30)
    assert second.astimezone(ZoneInfo("America/New_York")).fold == 1
    assert due_time(second, P1D, "America/New_York") == z(2026, 11, 2, 6, 30)
    # The same instants given in other offsets are the same question (the memo is in UTC).
    assert due_time(second.astimezone(ZoneInfo("Asia/Tokyo")), P1D, "America/New_York") == z(
        2026, 11, 2, 6, 30
    )
    first = z(2026, 11, 1, 5, 30)
    assert due_time(first, P1D, "America/New_York") == z(2026, 11, 2, 6, 30)


def test_exact_delays_ignore_the_zone() -> None:
    base = z(2026, 3, 8, 6, 59)
    for zone in ("America/New_York", "Europe/Berlin", "UTC"):
        assert due_time(base, Delay(seconds=90 * 60), zone) == base + timedelta(minutes=90)
        assert due_time(base, Delay(), zone) == base


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        due_time(datetime(2026, 3, 7, 16), P1D, "UTC")
    with pytest.raises(ValueError, match="zone"):
        due_time(z(2026, 3, 7, 16), P1D, "Mars/Olympus")
    with pytest.raises(TypeError):
        due_time("2026-03-07", P1D, "UTC")  # type: ignore[arg-type]
    for days, seconds in ((-1, 0), (0, -1), (True, 0)):
        with pytest.raises(ValueError):
            Delay(days=days, seconds=seconds)


ZONES = st.sampled_from(
    ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Australia/Lord_Howe", "UTC"]
)
INSTANTS = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@given(INSTANTS, st.integers(0, 400), st.integers(0, 3 * DAY), ZONES)
def test_days_keep_the_local_date_and_time_then_seconds_are_exact(
    base: datetime, days: int, seconds: int, zone: str
) -> None:
    tz = ZoneInfo(zone)
    after_days = due_time(base, Delay(days=days), zone)
    assert due_time(base, Delay(days=days, seconds=seconds), zone) == after_days + timedelta(
        seconds=seconds
    )
    wanted = base.astimezone(tz).replace(tzinfo=None) + timedelta(days=days)
    shown = after_days.astimezone(tz).replace(tzinfo=None)
    if shown == wanted:  # the wall time exists: the first instant that shows it
        assert after_days.astimezone(tz).fold == 0
    else:  # it fell into a gap: the gap's end, the first instant after it
        assert shown > wanted
        assert (after_days - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None) < wanted
    # The real length of a calendar day is 24 h give or take the DST shift (Lord Howe: 30 min).
    if days:
        drift = abs((after_days - base) - timedelta(days=days))
        assert drift <= timedelta(hours=1)


# --- the ISO text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delay", "canonical"),
    [
        ("PT0S", Delay(), "PT0S"),
        ("P1D", Delay(days=1), "P1D"),
        ("PT24H", Delay(seconds=86_400), "PT24H"),
        ("P1W", Delay(days=7), "P7D"),
        ("P1W2D", Delay(days=9), "P9D"),
        ("pt90m", Delay(seconds=5_400), "PT1H30M"),
        ("PT36H", Delay(seconds=36 * HOUR), "PT36H"),
        ("P1DT2H", Delay(days=1, seconds=2 * HOUR), "P1DT2H"),
        ("P2DT48H30S", Delay(days=2, seconds=48 * HOUR + 30), "P2DT48H30S"),
    ],
)
def test_delays_keep_days_and_hours_apart(text: str, delay: Delay, canonical: str) -> None:
    assert parse_delay(text) == delay
    assert format_delay(delay) == canonical
    assert parse_delay(canonical) == delay
    assert delay.nominal_seconds == parse_duration(text)  # a day counts 24 h there


@given(st.integers(0, 10_000), st.integers(0, 10**7))
def test_format_then_parse_round_trips(days: int, seconds: int) -> None:
    delay = Delay(days, seconds)
    assert parse_delay(format_delay(delay)) == delay


def test_months_and_years_are_still_refused() -> None:
    for text in ("P1M", "P1Y", "PT", "P", "1D"):
        with pytest.raises(ValueError):
            parse_delay(text)


# --- validation counts a calendar day as 24 hours ---------------------------------------


def test_bounds_and_validity_count_a_calendar_day_as_24_hours() -> None:
    assert delay_problems([Delay(), Delay(days=30)]) == []
    assert delay_problems([Delay(), Delay(seconds=30 * DAY)]) == []
    assert [p.position for p in delay_problems([Delay(), Delay(days=30, seconds=1)])] == [2]
    assert [p.position for p in delay_problems([Delay(days=31)])] == [1]
    assert [p.position for p in delay_problems([Delay(), Delay(seconds=HOUR - 1)])] == [2]
    assert delay_problems([Delay(), Delay(days=1)]) == []  # a day is more than an hour
    delays = [Delay(), Delay(days=2), Delay(days=1, seconds=12 * HOUR)]
    assert total_delay(delays) == 3 * DAY + 12 * HOUR
    assert validity_problem(3 * DAY + 12 * HOUR, delays) is not None
    assert validity_problem(3 * DAY + 12 * HOUR + 1, delays) is None
    # Plain seconds are still understood (and mean exact time).
    assert total_delay([0, 3_600, Delay(days=1)]) == DAY + HOUR
