"""Pure property tests (no HTTP) of the rules policies rely on: ISO 8601 durations
format and parse back, lineup delay bounds, token validity longer than the total delay.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dispatch_engine.rules.lineup import DAY, HOUR, delay_problems, validity_problem
from dispatch_engine.schemas.durations import format_duration, parse_duration

MAX = 30 * DAY
boundary_delays = st.sampled_from([0, 1, HOUR - 1, HOUR, HOUR + 1, MAX - 1, MAX, MAX + 1])
delays_strategy = st.one_of(boundary_delays, st.integers(min_value=0, max_value=40 * DAY))


@given(st.integers(min_value=0, max_value=10**10))
def test_format_then_parse_round_trips(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == text


@given(
    st.fixed_dictionaries(
        {},
        optional={
            unit: st.integers(min_value=0, max_value=10_000) for unit in ("W", "D", "H", "M", "S")
        },
    ).filter(bool)
)
def test_parse_then_format_keeps_the_seconds(parts: dict[str, int]) -> None:
    date = "".join(f"{parts[u]}{u}" for u in ("W", "D") if u in parts)
    clock = "".join(f"{parts[u]}{u}" for u in ("H", "M", "S") if u in parts)
    text = "P" + date + (f"T{clock}" if clock else "")
    seconds = (
        parts.get("W", 0) * 7 * DAY
        + parts.get("D", 0) * DAY
        + parts.get("H", 0) * HOUR
        + parts.get("M", 0) * 60
        + parts.get("S", 0)
    )
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.lists(delays_strategy, max_size=6))
def test_delay_problems_accept_exactly_the_valid_lineups(delays: list[int]) -> None:
    expected_bad = [
        position
        for position, delay in enumerate(delays, start=1)
        if not (0 <= delay <= MAX if position == 1 else HOUR <= delay <= MAX)
    ]
    problems = delay_problems(delays)
    assert [p.position for p in problems] == expected_bad
    assert (problems == []) == (
        (not delays or 0 <= delays[0] <= MAX) and all(HOUR <= d <= MAX for d in delays[1:])
    )


@given(st.integers(min_value=0, max_value=400 * DAY), st.lists(delays_strategy, max_size=6))
def test_validity_problem_iff_not_longer_than_total_delay(validity: int, delays: list[int]) -> None:
    assert (validity_problem(validity, delays) is None) == (validity > sum(delays))
    assert validity_problem(sum(delays), delays) is not None
    assert validity_problem(sum(delays) + 1, delays) is None
