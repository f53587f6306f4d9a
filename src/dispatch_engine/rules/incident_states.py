"""The incident state machine (R-INC-1), pure.

reported → acknowledged → investigating → identified → resolved → closed, one step at a
time; the only way back is identified → investigating (the suspected cause was wrong).
"""

from __future__ import annotations

from typing import Literal

State = Literal["reported", "acknowledged", "investigating", "identified", "resolved", "closed"]
STATES: tuple[State, ...] = (
    "reported",
    "acknowledged",
    "investigating",
    "identified",
    "resolved",
    "closed",
)
TRANSITIONS: dict[str, tuple[State, ...]] = {
    "reported": ("acknowledged",),
    "acknowledged": ("investigating",),
    "investigating": ("identified",),
    "identified": ("investigating", "resolved"),
    "resolved": ("closed",),
    "closed": (),
}
# The column each state stamps (with the injected clock) when it is entered.
STAMPS: dict[str, str] = {
    "acknowledged": "acknowledged_at",
    "investigating": "investigating_at",
    "identified": "identified_at",
    "resolved": "resolved_at",
    "closed": "closed_at",
}


def allowed_from(state: str) -> tuple[State, ...]:
    return TRANSITIONS.get(state, ())


def can_move(current: str, target: str) -> bool:
    return target in allowed_from(current)
