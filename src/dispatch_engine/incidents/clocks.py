"""The incident clocks (R-INC-2), pure: no I/O, no clock of their own.

* ``ack``: acknowledgement due 15 minutes after reporting; stops when acknowledged.
* ``update``: runs from acknowledgement until resolution; a status notice is due 30 minutes
  after the later of the acknowledgement and the last notice.
* ``postmortem``: P1/P2 only; starts at resolution, due 48 hours later (the policy's
  "within 24–48 hours": the window opens at +24 h, the deadline is +48 h; recording
  earlier is allowed); stops when a post-mortem is recorded.

A clock is overdue once ``now`` is strictly past its due time: met exactly at the due
time is on time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

ClockName = Literal["ack", "update", "postmortem"]
CLOCK_NAMES: tuple[ClockName, ...] = ("ack", "update", "postmortem")
ACK_WITHIN = timedelta(minutes=15)
UPDATE_EVERY = timedelta(minutes=30)
POSTMORTEM_OPENS = timedelta(hours=24)
POSTMORTEM_DUE = timedelta(hours=48)
MAJOR = frozenset({"P1", "P2"})


@dataclass(frozen=True)
class ClockInputs:
    """The incident facts the clocks depend on."""

    severity: str | None
    reported_at: datetime
    acknowledged_at: datetime | None = None
    last_update_at: datetime | None = None
    resolved_at: datetime | None = None
    postmortem_at: datetime | None = None


@dataclass(frozen=True)
class Clock:
    """One clock: its due time while running (None when stopped or not applicable)."""

    name: ClockName
    due_at: datetime | None
    opens_at: datetime | None = None

    def overdue(self, now: datetime) -> bool:
        return is_overdue(self.due_at, now)


def is_overdue(due_at: datetime | None, now: datetime) -> bool:
    return due_at is not None and now > due_at


def needs_postmortem(severity: str | None) -> bool:
    return severity in MAJOR


def ack_clock(facts: ClockInputs) -> Clock:
    if facts.acknowledged_at is not None:
        return Clock("ack", None)
    return Clock("ack", facts.reported_at + ACK_WITHIN)


def update_clock(facts: ClockInputs) -> Clock:
    if facts.acknowledged_at is None or facts.resolved_at is not None:
        return Clock("update", None)
    base = facts.acknowledged_at
    if facts.last_update_at is not None and facts.last_update_at > base:
        base = facts.last_update_at
    return Clock("update", base + UPDATE_EVERY)


def postmortem_clock(facts: ClockInputs) -> Clock:
    if (
        facts.resolved_at is None
        or facts.postmortem_at is not None
        or not needs_postmortem(facts.severity)
    ):
        return Clock("postmortem", None)
    return Clock(
        "postmortem",
        facts.resolved_at + POSTMORTEM_DUE,
        opens_at=facts.resolved_at + POSTMORTEM_OPENS,
    )


def all_clocks(facts: ClockInputs) -> tuple[Clock, Clock, Clock]:
    return ack_clock(facts), update_clock(facts), postmortem_clock(facts)


def window_exceeds(now: datetime, scheduled_at: datetime, threshold_minutes: int) -> bool:
    """R-INC-5: resend window = now − scheduled time; more than the threshold needs approval."""
    return now - scheduled_at > timedelta(minutes=threshold_minutes)
