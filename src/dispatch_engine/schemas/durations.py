"""ISO 8601 durations as the API speaks them (`PT1H`, `P3D`, `P1W`), in exact seconds.

Years and months have no fixed length, so they are refused rather than guessed.
"""

from __future__ import annotations

import re

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
