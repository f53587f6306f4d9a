"""What a rule can decide about a message (R-RUL-1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Pass:
    """Every rule passed: the message goes out now."""


@dataclass(frozen=True)
class Hold:
    """Paused somewhere above the message: keep it, send nothing, wait for a resume."""

    rule: str
    reason: str


@dataclass(frozen=True)
class Suppress:
    """Not sent, for good. `next_step` says whether the invite moves on to its next message
    (a skipped step) or ends here (responded, expired, fatigue)."""

    rule: str
    reason: str
    next_step: bool


@dataclass(frozen=True)
class Defer:
    """Not now: look again at `until`."""

    rule: str
    reason: str
    until: datetime


Decision = Pass | Hold | Suppress | Defer
