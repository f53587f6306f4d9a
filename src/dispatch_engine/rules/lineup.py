"""Pure rules for a policy's lineup delays and a dispatch's token validity (R-POL-2, R-DSP-2).

Delays are given as :class:`~dispatch_engine.rules.delays.Delay` (calendar days + exact
seconds) or as plain seconds. Here a calendar day always counts **24 hours**
(``Delay.nominal_seconds``): ``P30D`` is exactly the 30-day bound, ``P1D`` passes the
one-hour minimum, and ``P3D`` is as long as ``PT72H`` against a token validity. Across a
DST change the real day is 23 or 25 hours long; that hour is not counted, as business
window deferrals are not counted either (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dispatch_engine.rules.delays import Delay

HOUR = 3_600
DAY = 86_400
DelayLike = Delay | int
FIRST_MESSAGE_MIN = 0
FIRST_MESSAGE_MAX = 30 * DAY
LATER_MESSAGE_MIN = HOUR
LATER_MESSAGE_MAX = 30 * DAY


@dataclass(frozen=True)
class DelayProblem:
    position: int  # 1-based
    reason: str


def delay_bounds(position: int) -> tuple[int, int]:
    """Allowed delay in seconds for the message at a 1-based position."""
    if position == 1:
        return FIRST_MESSAGE_MIN, FIRST_MESSAGE_MAX
    return LATER_MESSAGE_MIN, LATER_MESSAGE_MAX


def nominal_seconds(delay: DelayLike) -> int:
    """A delay's length for validation: calendar days count 24 hours."""
    return delay.nominal_seconds if isinstance(delay, Delay) else delay


def delay_problems(delays: Sequence[DelayLike]) -> list[DelayProblem]:
    """Every delay that is out of bounds for its position, in lineup order."""
    problems = []
    for index, delay in enumerate(map(nominal_seconds, delays), start=1):
        low, high = delay_bounds(index)
        if not low <= delay <= high:
            where = "from file receipt" if index == 1 else "after the previous message"
            problems.append(
                DelayProblem(
                    index,
                    f"message {index} must be sent between {_human(low)} and {_human(high)} "
                    f"{where}; got {_human(delay)}",
                )
            )
    return problems


def total_delay(delays: Sequence[DelayLike]) -> int:
    """Seconds from file receipt to the last message when nothing is deferred (calendar days
    counted as 24 hours)."""
    return sum(map(nominal_seconds, delays))


def validity_problem(validity_seconds: int, delays: Sequence[DelayLike]) -> str | None:
    """Why a token validity is too short for the lineup, or None when it is long enough."""
    total = total_delay(delays)
    if validity_seconds <= total:
        return (
            f"token validity ({_human(validity_seconds)}) must be longer than the lineup's "
            f"total delay ({_human(total)}) so the survey link is still valid after the "
            "last message, with time left to respond"
        )
    return None


def _human(seconds: int) -> str:
    if seconds == 0:
        return "0 seconds"
    parts = []
    for unit, size in (("day", DAY), ("hour", HOUR), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts)
