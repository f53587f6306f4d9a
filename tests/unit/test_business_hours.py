"""Tests for dispatch_engine.rules.business_hours: windows, deferral, DST, validation."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch_engine.rules.business_hours import (
    DAY_NAMES,
    BusinessHours,
    BusinessHoursError,
    TimeRange,
    WindowDecision,
    is_open,
    next_send_time,
    order_key,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
MICRO = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def office_hours(zone: str = "Europe/Berlin", *ranges: tuple[str, str]) -> BusinessHours:
    """Mon-Fri with the given ranges (default 08:00-17:00)."""
    day = list(ranges) or [("08:00", "17:00")]
    return BusinessHours.from_spec(zone, {name: day for name in WEEKDAYS})


def sunday_only(zone: str, start: str, end: str) -> BusinessHours:
    return BusinessHours.from_spec(zone, {"sun": [(start, end)]})


def assert_decision_invariants(
    due: datetime, decision: WindowDecision, hours: BusinessHours
) -> None:
    due_utc = due.astimezone(UTC)
    assert decision.send_at.tzinfo is UTC
    assert decision.window_start.tzinfo is UTC
    assert decision.window_end.tzinfo is UTC
    assert decision.send_at >= due_utc
    assert decision.window_start <= decision.send_at < decision.window_end
    assert decision.deferred == (decision.send_at != due_utc)
    if decision.deferred:
        assert decision.send_at == decision.window_start
        assert not is_open(decision.send_at - MICRO, hours, decision.local_zone)
    assert is_open(decision.send_at, hours, decision.local_zone)
    again = next_send_time(decision.send_at, hours, decision.local_zone)
    assert again.send_at == decision.send_at
    assert not again.deferred


# --- basic windows ---------------------------------------------------------------------------


def test_friday_after_close_is_deferred_to_monday_opening() -> None:
    hours = office_hours()
    due = datetime(2026, 5, 15, 17, 0, tzinfo=BERLIN)  # Friday 17:00 CEST, end is exclusive
    decision = next_send_time(due, hours)
    assert decision.deferred
    assert decision.send_at == utc(2026, 5, 18, 6, 0)  # Monday 08:00 CEST
    assert decision.send_at.astimezone(BERLIN).weekday() == 0
    assert decision.window_start == utc(2026, 5, 18, 6, 0)
    assert decision.window_end == utc(2026, 5, 18, 15, 0)
    assert decision.local_zone == "Europe/Berlin"
    assert_decision_invariants(due, decision, hours)


def test_last_open_minute_on_friday_is_sent_now() -> None:
    hours = office_hours()
    due = datetime(2026, 5, 15, 16, 59, 59, tzinfo=BERLIN)
    decision = next_send_time(due, hours)
    assert not decision.deferred
    assert decision.send_at == due.astimezone(UTC)
    assert decision.window_end == utc(2026, 5, 15, 15, 0)


@pytest.mark.parametrize(
    "due",
    [
        datetime(2026, 5, 16, 0, 0, tzinfo=BERLIN),  # Saturday midnight
        datetime(2026, 5, 16, 10, 30, tzinfo=BERLIN),  # Saturday morning
        datetime(2026, 5, 17, 23, 59, 59, tzinfo=BERLIN),  # Sunday night
        datetime(2026, 5, 18, 7, 59, tzinfo=BERLIN),  # Monday before opening
        utc(2026, 5, 16, 12, 0),  # input zone does not matter, only the instant
    ],
)
def test_weekend_arrivals_go_out_monday_0800(due: datetime) -> None:
    decision = next_send_time(due, office_hours())
    assert decision.deferred
    assert decision.send_at == utc(2026, 5, 18, 6, 0)


def test_inside_window_sends_at_due_normalised_to_utc() -> None:
    due = datetime(2026, 5, 13, 9, 15, 30, 123, tzinfo=BERLIN)
    decision = next_send_time(due, office_hours())
    assert not decision.deferred
    assert decision.send_at == utc(2026, 5, 13, 7, 15, 30, 123)
    assert decision.send_at.tzinfo is UTC


def test_several_ranges_per_day_defer_over_lunch() -> None:
    hours = office_hours("Europe/Berlin", ("08:00", "12:00"), ("13:00", "17:00"))
    lunch = next_send_time(datetime(2026, 5, 13, 12, 30, tzinfo=BERLIN), hours)
    assert lunch.deferred
    assert lunch.send_at == utc(2026, 5, 13, 11, 0)  # 13:00 CEST
    assert lunch.window_end == utc(2026, 5, 13, 15, 0)
    at_noon = next_send_time(datetime(2026, 5, 13, 12, 0, tzinfo=BERLIN), hours)
    assert at_noon.deferred  # 12:00 is the exclusive end of the morning range
    assert at_noon.send_at == utc(2026, 5, 13, 11, 0)
    morning = next_send_time(datetime(2026, 5, 13, 11, 59, tzinfo=BERLIN), hours)
    assert not morning.deferred
    assert morning.window_start == utc(2026, 5, 13, 6, 0)
    assert morning.window_end == utc(2026, 5, 13, 10, 0)
    evening = next_send_time(datetime(2026, 5, 13, 17, 0, tzinfo=BERLIN), hours)
    assert evening.send_at == utc(2026, 5, 14, 6, 0)


def test_adjacent_ranges_have_no_closed_gap() -> None:
    hours = office_hours("Europe/Berlin", ("08:00", "12:00"), ("12:00", "17:00"))
    noon = datetime(2026, 5, 13, 12, 0, tzinfo=BERLIN)
    decision = next_send_time(noon, hours)
    assert not decision.deferred
    assert decision.window_start == utc(2026, 5, 13, 10, 0)
    assert decision.window_end == utc(2026, 5, 13, 15, 0)
    assert is_open(noon - MICRO, hours)


def test_day_ending_at_2400_joins_next_day_starting_at_0000() -> None:
    hours = BusinessHours.from_spec(
        "Europe/Berlin", {"mon": [("20:00", "24:00")], "tue": [("00:00", "06:00")]}
    )
    midnight = datetime(2026, 5, 12, 0, 0, tzinfo=BERLIN)
    assert is_open(midnight - MICRO, hours)
    assert is_open(midnight, hours)
    decision = next_send_time(midnight, hours)
    assert decision.window_start == midnight.astimezone(UTC)
    assert decision.window_end == utc(2026, 5, 12, 4, 0)
    assert not is_open(datetime(2026, 5, 12, 6, 0, tzinfo=BERLIN), hours)


def test_default_is_monday_to_friday_all_day() -> None:
    hours = BusinessHours.default()
    assert hours.time_zone == "UTC"
    assert hours.days[:5] == ((TimeRange(0, 1440),),) * 5
    assert hours.days[5:] == ((), ())
    assert is_open(utc(2026, 5, 11, 0, 0), hours)  # Monday 00:00
    assert is_open(utc(2026, 5, 15, 23, 59, 59), hours)  # Friday 23:59:59
    saturday = next_send_time(utc(2026, 5, 16, 0, 0), hours)
    assert saturday.deferred
    assert saturday.send_at == utc(2026, 5, 18, 0, 0)
    tuesday = next_send_time(utc(2026, 5, 12, 0, 0), hours)
    assert not tuesday.deferred
    assert (tuesday.window_start, tuesday.window_end) == (utc(2026, 5, 12), utc(2026, 5, 13))


def test_default_in_a_named_zone_uses_local_midnights() -> None:
    hours = BusinessHours.default("America/New_York")
    decision = next_send_time(utc(2026, 5, 16, 3, 0), hours)  # Friday 23:00 EDT
    assert not decision.deferred
    decision = next_send_time(utc(2026, 5, 16, 4, 0), hours)  # Saturday 00:00 EDT
    assert decision.send_at == utc(2026, 5, 18, 4, 0)  # Monday 00:00 EDT


# --- contact zone override -------------------------------------------------------------------


def test_contact_zone_override_replaces_policy_zone() -> None:
    hours = office_hours("Europe/Berlin")
    due = utc(2026, 5, 13, 11, 0)  # 13:00 Berlin (open), 07:00 New York (closed)
    assert next_send_time(due, hours).send_at == due
    decision = next_send_time(due, hours, zone_override="America/New_York")
    assert decision.local_zone == "America/New_York"
    assert decision.deferred
    assert decision.send_at == utc(2026, 5, 13, 12, 0)  # 08:00 EDT
    assert not is_open(due, hours, "America/New_York")
    assert is_open(due, hours, "Asia/Kolkata")  # 16:30 IST


@pytest.mark.parametrize(
    "override", ["Mars/Olympus_Mons", "", "europe/berlin", "Europe/Berlin ", "../etc/passwd", None]
)
def test_invalid_contact_zone_falls_back_to_policy_zone(override: str | None) -> None:
    hours = office_hours("Europe/Berlin")
    due = utc(2026, 5, 13, 16, 0)  # 18:00 Berlin, closed
    decision = next_send_time(due, hours, zone_override=override)
    assert decision.local_zone == "Europe/Berlin"
    assert decision.send_at == utc(2026, 5, 14, 6, 0)


def test_host_dependent_localtime_zone_is_not_accepted() -> None:
    decision = next_send_time(utc(2026, 5, 13, 16, 0), office_hours(), zone_override="localtime")
    assert decision.local_zone == "Europe/Berlin"
    with pytest.raises(BusinessHoursError) as info:
        BusinessHours.from_spec("localtime", {"mon": [("08:00", "17:00")]})
    assert info.value.field == "time_zone"


# --- naive datetimes and ordering ------------------------------------------------------------


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 5, 13, 9, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_send_time(naive, office_hours())
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(naive, office_hours())
    with pytest.raises(ValueError, match="timezone-aware"):
        order_key(naive, "m-1")


def test_order_key_keeps_original_due_order_with_id_tiebreak() -> None:
    hours = office_hours()
    messages = [
        ("c", datetime(2026, 5, 16, 9, 0, tzinfo=BERLIN)),
        ("b", utc(2026, 5, 15, 20, 0)),
        ("a", datetime(2026, 5, 16, 3, 0, tzinfo=NEW_YORK)),  # same instant as "c"
        ("d", datetime(2026, 5, 15, 17, 0, tzinfo=BERLIN)),
    ]
    send_times = {next_send_time(due, hours).send_at for _, due in messages}
    assert send_times == {utc(2026, 5, 18, 6, 0)}  # all collapse onto Monday 08:00
    ordered = sorted(messages, key=lambda item: order_key(item[1], item[0]))
    assert [message_id for message_id, _ in ordered] == ["d", "b", "a", "c"]
    assert order_key(messages[0][1], "c")[0].tzinfo is UTC


# --- DST -------------------------------------------------------------------------------------


def test_berlin_spring_forward_window_starting_in_gap_opens_after_gap() -> None:
    hours = sunday_only("Europe/Berlin", "02:30", "05:00")  # 2026-03-29 02:00-03:00 missing
    decision = next_send_time(datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN), hours)
    assert decision.send_at == utc(2026, 3, 29, 1, 0)  # 03:00 CEST, first real instant
    assert decision.send_at.astimezone(BERLIN).utcoffset() == timedelta(hours=2)
    assert decision.window_end == utc(2026, 3, 29, 3, 0)  # 05:00 CEST
    assert not is_open(utc(2026, 3, 29, 1, 0) - MICRO, hours)
    # the usual Sunday, for contrast: 02:30 CET
    assert next_send_time(utc(2026, 3, 22), hours).send_at == utc(2026, 3, 22, 1, 30)


def test_berlin_spring_forward_window_ending_in_gap_ends_at_gap_end() -> None:
    hours = sunday_only("Europe/Berlin", "00:00", "02:30")
    assert is_open(utc(2026, 3, 29, 0, 59, 59), hours)
    assert not is_open(utc(2026, 3, 29, 1, 0), hours)
    decision = next_send_time(utc(2026, 3, 29, 0, 0), hours)
    assert decision.window_end == utc(2026, 3, 29, 1, 0)


def test_berlin_fall_back_window_start_uses_first_end_uses_second_occurrence() -> None:
    hours = sunday_only("Europe/Berlin", "02:30", "05:00")  # 2026-10-25 02:00-03:00 twice
    decision = next_send_time(datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN), hours)
    assert decision.send_at == utc(2026, 10, 25, 0, 30)  # first 02:30, still CEST
    assert decision.window_end == utc(2026, 10, 25, 4, 0)  # 05:00 CET
    second_0245 = datetime(2026, 10, 25, 2, 45, fold=1, tzinfo=BERLIN)
    assert is_open(second_0245, hours)

    ends_in_overlap = sunday_only("Europe/Berlin", "01:00", "02:30")
    assert is_open(datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=BERLIN), ends_in_overlap)
    assert not is_open(datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN), ends_in_overlap)
    window = next_send_time(utc(2026, 10, 24, 23, 0), ends_in_overlap)
    assert window.window_end == utc(2026, 10, 25, 1, 30)  # second 02:30 = 01:30Z


def test_new_york_spring_forward_window_starting_in_gap() -> None:
    hours = sunday_only("America/New_York", "02:30", "05:00")  # 2026-03-08 02:00-03:00 missing
    decision = next_send_time(datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK), hours)
    assert decision.send_at == utc(2026, 3, 8, 7, 0)  # 03:00 EDT
    assert decision.window_end == utc(2026, 3, 8, 9, 0)  # 05:00 EDT


def test_new_york_window_entirely_in_gap_does_not_exist_that_day() -> None:
    hours = sunday_only("America/New_York", "02:00", "02:30")
    decision = next_send_time(datetime(2026, 3, 8, 0, 0, tzinfo=NEW_YORK), hours)
    assert decision.send_at == utc(2026, 3, 15, 6, 0)  # next Sunday 02:00 EDT
    assert_decision_invariants(datetime(2026, 3, 8, tzinfo=NEW_YORK), decision, hours)


def test_only_window_lost_to_gap_is_found_two_weeks_ahead() -> None:
    hours = sunday_only("America/New_York", "02:00", "02:30")
    decision = next_send_time(datetime(2026, 3, 1, 3, 0, tzinfo=NEW_YORK), hours)
    assert decision.send_at == utc(2026, 3, 15, 6, 0)  # skips 2026-03-08, where it is missing


def test_window_ending_2400_runs_into_a_midnight_overlap() -> None:
    # America/Havana 2026-11-01: 01:00 CDT -> 00:00 CST, so 00:00-01:00 happens twice and
    # Saturday's 24:00 is the *second* midnight; the first 00:30 belongs to Saturday's window.
    hours = BusinessHours.from_spec("America/Havana", {"sat": [("20:00", "24:00")]})
    havana = ZoneInfo("America/Havana")
    first_0030 = datetime(2026, 11, 1, 0, 30, tzinfo=havana)
    assert first_0030.date().weekday() == 6
    decision = next_send_time(first_0030, hours)
    assert not decision.deferred
    assert decision.window_end == utc(2026, 11, 1, 5, 0)  # 00:00 CST
    assert not is_open(datetime(2026, 11, 1, 0, 30, fold=1, tzinfo=havana), hours)


def test_new_york_fall_back_window_starting_in_overlap() -> None:
    hours = sunday_only("America/New_York", "01:30", "05:00")  # 2026-11-01 01:00-02:00 twice
    decision = next_send_time(datetime(2026, 11, 1, 0, 0, tzinfo=NEW_YORK), hours)
    assert decision.send_at == utc(2026, 11, 1, 5, 30)  # first 01:30, EDT
    assert decision.window_end == utc(2026, 11, 1, 10, 0)  # 05:00 EST
    assert is_open(datetime(2026, 11, 1, 1, 15, fold=1, tzinfo=NEW_YORK), hours)

    ends_in_overlap = sunday_only("America/New_York", "00:00", "01:30")
    assert is_open(utc(2026, 11, 1, 6, 29), ends_in_overlap)  # 01:29 EST, second pass
    assert not is_open(utc(2026, 11, 1, 6, 30), ends_in_overlap)  # second 01:30


@pytest.mark.parametrize(
    ("zone", "saturday_night", "expected_utc", "new_offset"),
    [
        ("Europe/Berlin", date(2026, 3, 28), utc(2026, 3, 30, 6, 0), timedelta(hours=2)),
        ("Europe/Berlin", date(2026, 10, 24), utc(2026, 10, 26, 7, 0), timedelta(hours=1)),
        ("America/New_York", date(2026, 3, 7), utc(2026, 3, 9, 12, 0), timedelta(hours=-4)),
        ("America/New_York", date(2026, 10, 31), utc(2026, 11, 2, 13, 0), timedelta(hours=-5)),
    ],
)
def test_weekend_deferral_across_dst_transition_uses_new_offset(
    zone: str, saturday_night: date, expected_utc: datetime, new_offset: timedelta
) -> None:
    tz = ZoneInfo(zone)
    due = datetime.combine(saturday_night, datetime.min.time()).replace(hour=22, tzinfo=tz)
    old_offset = due.utcoffset()
    hours = office_hours(zone)
    decision = next_send_time(due, hours)
    assert decision.deferred
    assert decision.send_at == expected_utc
    local = decision.send_at.astimezone(tz)
    assert (local.weekday(), local.hour, local.minute) == (0, 8, 0)
    assert local.utcoffset() == new_offset != old_offset
    assert_decision_invariants(due, decision, hours)


def test_lord_howe_half_hour_spring_forward() -> None:
    # Australia/Lord_Howe 2026-10-04: 02:00 -> 02:30 (+10:30 -> +11:00)
    hours = sunday_only("Australia/Lord_Howe", "02:15", "04:00")
    tz = ZoneInfo("Australia/Lord_Howe")
    decision = next_send_time(datetime(2026, 10, 4, 0, 0, tzinfo=tz), hours)
    local = decision.send_at.astimezone(tz)
    assert (local.hour, local.minute, local.utcoffset()) == (2, 30, timedelta(hours=11))


# --- validation ------------------------------------------------------------------------------


def test_from_spec_builds_sorted_week_with_missing_days_closed() -> None:
    hours = BusinessHours.from_spec(
        "Asia/Kolkata",
        {"wed": [("13:00", "17:00"), ("08:00", "12:00")], "sat": [("9:30", "24:00")]},
    )
    assert hours.time_zone == "Asia/Kolkata"
    assert hours.days[2] == (TimeRange(480, 720), TimeRange(780, 1020))
    assert hours.days[5] == (TimeRange(570, 1440),)
    assert [bool(day) for day in hours.days] == [False, False, True, False, False, True, False]


@pytest.mark.parametrize(
    ("time_zone", "days", "field"),
    [
        ("Europe/Berlin", {"monday": [("08:00", "17:00")]}, "days.monday"),
        ("Europe/Berlin", {"Mon": [("08:00", "17:00")]}, "days.Mon"),
        ("Europe/Berlin", {"mon": [("08:00", "17:00"), ("8am", "5pm")]}, "days.mon[1]"),
        ("Europe/Berlin", {"tue": [("08:00", "25:00")]}, "days.tue[0]"),
        ("Europe/Berlin", {"tue": [("08:60", "12:00")]}, "days.tue[0]"),
        ("Europe/Berlin", {"tue": [("08:00", "24:01")]}, "days.tue[0]"),
        ("Europe/Berlin", {"tue": [("0800", "1200")]}, "days.tue[0]"),
        ("Europe/Berlin", {"tue": [("\u0660\u0668:\u0660\u0660", "12:00")]}, "days.tue[0]"),
        ("Europe/Berlin", {"wed": [("08:00", "12:00"), ("12:00", "12:00")]}, "days.wed[1]"),
        ("Europe/Berlin", {"wed": [("17:00", "08:00")]}, "days.wed[0]"),
        ("Europe/Berlin", {"thu": [("24:00", "24:00")]}, "days.thu[0]"),
        ("Europe/Berlin", {"fri": [("08:00", "12:00"), ("11:00", "13:00")]}, "days.fri[1]"),
        ("Europe/Berlin", {"fri": [("11:00", "13:00"), ("08:00", "12:00")]}, "days.fri[0]"),
        ("Europe/Berlin", {"sat": [("08:00",)]}, "days.sat[0]"),
        ("Europe/Berlin", {"sat": ["08:00-12:00"]}, "days.sat[0]"),
        ("Europe/Berlin", {"sat": [(800, 1200)]}, "days.sat[0]"),
        ("Europe/Berlin", {"sun": "08:00"}, "days.sun"),
        ("Mars/Olympus_Mons", {"mon": [("08:00", "17:00")]}, "time_zone"),
        ("", {"mon": [("08:00", "17:00")]}, "time_zone"),
        ("Europe/Berlin", {}, "days"),
        ("Europe/Berlin", {"mon": [], "sun": []}, "days"),
    ],
)
def test_from_spec_errors_name_the_field(time_zone: str, days: object, field: str) -> None:
    with pytest.raises(BusinessHoursError) as info:
        BusinessHours.from_spec(time_zone, days)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert info.value.reason
    assert str(info.value).startswith(f"{field}: ")


def test_direct_construction_is_validated() -> None:
    monday = (TimeRange(480, 1020),)
    with pytest.raises(BusinessHoursError, match="7 days") as info:
        BusinessHours("UTC", (monday,) * 6)
    assert info.value.field == "days"
    with pytest.raises(BusinessHoursError) as info:
        BusinessHours("UTC", ((TimeRange(600, 700), TimeRange(480, 500)),) + ((),) * 6)
    assert info.value.field == "days.mon[1]"
    with pytest.raises(BusinessHoursError) as info:
        BusinessHours("UTC", ((),) * 7)
    assert info.value.field == "days"
    with pytest.raises(BusinessHoursError) as info:
        BusinessHours("No/Where", (monday,) + ((),) * 6)
    assert info.value.field == "time_zone"
    for start, end in [(-1, 10), (0, 0), (600, 500), (1440, 1440), (0, 1441)]:
        with pytest.raises(BusinessHoursError):
            TimeRange(start, end)


def test_values_are_frozen() -> None:
    hours = BusinessHours.default()
    with pytest.raises(dataclasses.FrozenInstanceError):
        hours.time_zone = "Europe/Berlin"  # type: ignore[misc]
    decision = next_send_time(utc(2026, 5, 13), hours)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.deferred = True  # type: ignore[misc]


# --- properties ------------------------------------------------------------------------------

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
)
START = datetime(2020, 1, 1)
END = datetime(2035, 12, 31)


def _transitions(zone: ZoneInfo) -> list[datetime]:
    """UTC instants where the zone's offset changes, 2020-2035 (weekly scan, then bisection).

    Weekly steps are enough for ZONES: none changes offset twice within a week.
    """
    found: list[datetime] = []
    instant = START.replace(tzinfo=UTC)
    previous = instant.astimezone(zone).utcoffset()
    while instant < END.replace(tzinfo=UTC):
        following = instant + timedelta(days=7)
        offset = following.astimezone(zone).utcoffset()
        if offset != previous:
            low, high = instant, following
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                if mid.astimezone(zone).utcoffset() == previous:
                    low = mid
                else:
                    high = mid
            found.append(high.replace(microsecond=0))
            previous = offset
        instant = following
    return found


TRANSITIONS = [t for key in ZONES for t in _transitions(ZoneInfo(key))]

# Boundaries biased to quarter hours, where the DST gaps and overlaps of these zones begin.
boundaries = st.one_of(
    st.integers(0, 96).map(lambda quarter: quarter * 15),
    st.integers(0, 1440),
)


@st.composite
def day_ranges(draw: st.DrawFn) -> tuple[TimeRange, ...]:
    points = sorted(draw(st.lists(boundaries, max_size=6)))
    pairs = zip(points[0::2], points[1::2], strict=False)
    return tuple(TimeRange(start, end) for start, end in pairs if start < end)


@st.composite
def business_hours(draw: st.DrawFn) -> BusinessHours:
    zone = draw(st.sampled_from(ZONES))
    week = list(draw(st.lists(day_ranges(), min_size=7, max_size=7)))
    if not any(week):
        week[draw(st.integers(0, 6))] = (TimeRange(draw(st.integers(0, 1439)), 1440),)
    return BusinessHours(zone, tuple(week))


aware_datetimes = st.one_of(
    st.datetimes(
        min_value=START,
        max_value=END,
        timezones=st.sampled_from([ZoneInfo(key) for key in ZONES]),
    ),
    st.builds(
        lambda transition, minutes: transition + timedelta(minutes=minutes),
        st.sampled_from(TRANSITIONS),
        st.integers(-3 * 24 * 60, 3 * 24 * 60),
    ),
)

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(due=aware_datetimes, hours=business_hours(), override=st.sampled_from((None, *ZONES)))
def test_property_result_is_earliest_open_instant(
    due: datetime, hours: BusinessHours, override: str | None
) -> None:
    decision = next_send_time(due, hours, override)
    assert decision.local_zone == (override or hours.time_zone)
    assert_decision_invariants(due, decision, hours)


@PROPERTY_SETTINGS
@given(due=aware_datetimes, hours=business_hours(), fractions=st.lists(st.floats(0, 1), max_size=5))
def test_property_no_open_instant_is_skipped(
    due: datetime, hours: BusinessHours, fractions: list[float]
) -> None:
    decision = next_send_time(due, hours)
    due_utc = due.astimezone(UTC)
    gap = decision.send_at - due_utc
    if gap <= timedelta(hours=1):
        probes = [due_utc + timedelta(minutes=m) for m in range(int(gap / timedelta(minutes=1)))]
    else:
        probes = [due_utc + gap * (i / 40) for i in range(40)]
    probes += [due_utc + gap * f for f in fractions]
    probes += [t for t in TRANSITIONS if due_utc <= t < decision.send_at]
    for probe in probes:
        if probe < decision.send_at:
            assert not is_open(probe, hours), probe


def _wall_clock_open(at: datetime, hours: BusinessHours) -> bool:
    local = at.astimezone(ZoneInfo(hours.time_zone))
    minute = local.hour * 60 + local.minute
    return any(r.start <= minute < r.end for r in hours.days[local.weekday()])


@PROPERTY_SETTINGS
@given(at=aware_datetimes, hours=business_hours())
def test_property_matches_plain_wall_clock_away_from_dst(
    at: datetime, hours: BusinessHours
) -> None:
    at_utc = at.astimezone(UTC)
    if any(abs(t - at_utc) < timedelta(days=2) for t in TRANSITIONS):
        return  # near a transition the wall clock is ambiguous; covered by other tests
    assert is_open(at, hours) == _wall_clock_open(at_utc, hours)


@PROPERTY_SETTINGS
@given(due=aware_datetimes, hours=business_hours(), zone=st.sampled_from(ZONES))
def test_property_override_equals_policy_in_that_zone(
    due: datetime, hours: BusinessHours, zone: str
) -> None:
    in_zone = dataclasses.replace(hours, time_zone=zone)
    assert next_send_time(due, hours, zone) == next_send_time(due, in_zone)
    assert next_send_time(due, in_zone, "Not/AZone") == next_send_time(due, in_zone)


@PROPERTY_SETTINGS
@given(hours=business_hours())
def test_property_from_spec_round_trips(hours: BusinessHours) -> None:
    def hhmm(minutes: int) -> str:
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    spec = {
        name: [(hhmm(r.start), hhmm(r.end)) for r in ranges]
        for name, ranges in zip(DAY_NAMES, hours.days, strict=True)
        if ranges
    }
    assert BusinessHours.from_spec(hours.time_zone, spec) == hours
