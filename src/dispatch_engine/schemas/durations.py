"""ISO 8601 durations as the API speaks them (`PT1H`, `P3D`, `P1W`).

Two readings: `parse_duration` gives exact seconds (a day as 24 hours: token validity,
bounds), `parse_delay` keeps a lineup delay's calendar days apart from its exact time
(`P1D` is a nominal day, `PT24H` is 24 hours; rules/delays.py). Years and months have no
fixed length, so they are refused rather than guessed.
"""

from __future__ import annotations

import re

from dispatch_engine.rules.delays import Delay

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)
_UNITS = {"weeks": 604_800, "days": 86_400, "hours": 3_600, "minutes": 60, "seconds": 1}


def parse_duration(text: str) -> int:
    """Seconds in an ISO 8601 duration; raises ValueError with the reason."""
    if not isinstance(text, str):
        raise ValueError("must be an ISO 8601 duration string such as PT1H or P3D")
    match = _DURATION.match(text.strip().upper())
    if not match:
        date_part = text.strip().upper().split("T", 1)[0]
        if re.search(r"\d+[YM]", date_part):
            raise ValueError("years and months are not allowed; use days (P30D)")
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT1H or P3D")
    return sum(int(value) * _UNITS[name] for name, value in match.groupdict().items() if value)


def parse_delay(text: str) -> Delay:
    """A lineup delay: weeks and days as calendar days, hours/minutes/seconds as exact
    seconds; raises ValueError with the reason (as `parse_duration`)."""
    parse_duration(text)  # the same checks and reasons
    match = _DURATION.match(text.strip().upper())
    assert match is not None
    parts = {name: int(value) for name, value in match.groupdict().items() if value}
    return Delay(
        days=parts.get("weeks", 0) * 7 + parts.get("days", 0),
        seconds=parts.get("hours", 0) * 3_600
        + parts.get("minutes", 0) * 60
        + parts.get("seconds", 0),
    )


def format_delay(delay: Delay) -> str:
    """The canonical text of a delay: calendar days (weeks as days), then the exact time in
    hours/minutes/seconds, never folded into days: `P7D`, `PT36H`, `P1DT2H`, `PT0S`."""
    out = "P" + (f"{delay.days}D" if delay.days else "")
    hours, rest = divmod(delay.seconds, 3_600)
    minutes, secs = divmod(rest, 60)
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    clock += f"{secs}S" if secs else ""
    if clock:
        out += "T" + clock
    return out if out != "P" else "PT0S"


def format_duration(seconds: int) -> str:
    """The canonical ISO 8601 form: days, then hours/minutes/seconds; `PT0S` for zero."""
    if seconds < 0:
        raise ValueError("durations are never negative")
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    clock += f"{secs}S" if secs else ""
    if clock:
        out += "T" + clock
    return out if out != "P" else "PT0S"
