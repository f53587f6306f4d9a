"""Policy preview (R-RUL-3): when each lineup message of a contact posted at a given time
would go out, and why — computed with the pipeline's own rules, writing nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from dispatch_engine.rules.base import Defer, Pass, Suppress
from dispatch_engine.rules.business_hours import BusinessHours, next_send_time, window_zone
from dispatch_engine.rules.delays import Delay, due_time
from dispatch_engine.rules.pipeline import DndFacts, MessageFacts, decide

FAR_FUTURE = timedelta(days=3650)


@dataclass(frozen=True)
class ClosedDay:
    """A local date whose opening hours a message skipped: `closed_date` or `holiday`."""

    day: date
    reason: Literal["closed_date", "holiday"]
    name: str | None  # the holiday's name


@dataclass(frozen=True)
class PreviewStep:
    position: int
    channel: str
    delay: Delay
    due_at: datetime
    send_at: datetime
    deferred: bool
    reason: str | None
    window_start: datetime
    window_end: datetime
    window_zone: str
    closed_days: tuple[ClosedDay, ...] = ()
    suppressed: bool = False  # `too_late`: the invite ends here


def preview_lineup(
    posted_at: datetime,
    steps: Sequence[tuple[str, Delay]],
    hours: BusinessHours,
    contact_zone: str | None,
    *,
    valid_until: datetime | None = None,
    min_validity_left: timedelta = timedelta(0),
) -> list[PreviewStep]:
    """Walk the lineup: step 1 counts from `posted_at`, step k from step k-1's send time,
    each due time by `due_time` in the zone the window is read in, as the engine does.

    Every other rule is taken to pass (a new contact, nothing paused or unsubscribed), so
    what remains is exactly the business window as the pipeline applies it, and, given the
    token's `valid_until`, the validity rules: a step suppressed `too_late` (or
    `token_expired`) ends the walk, as it ends the invite; its `send_at` is when it would
    have gone out.
    """
    zone = window_zone(hours, contact_zone)
    out: list[PreviewStep] = []
    previous = posted_at
    min_left = min_validity_left
    for position, (channel, delay) in enumerate(steps, start=1):
        due = due_time(previous, delay, zone)
        until = valid_until or due + FAR_FUTURE  # no validity given: never near its end
        decision = decide(_facts(due, channel, hours, contact_zone, until, min_left))
        send_at, reason = due, None
        if isinstance(decision, Defer):
            send_at, reason = decision.until, decision.reason
            decision = decide(_facts(send_at, channel, hours, contact_zone, until, min_left))
        if isinstance(decision, Suppress):  # now, or (rule off) at the opening it waited for
            window = next_send_time(due, hours, contact_zone)
            out.append(
                PreviewStep(
                    position=position,
                    channel=channel,
                    delay=delay,
                    due_at=due,
                    send_at=window.send_at,
                    deferred=window.deferred,
                    reason=decision.reason,
                    window_start=window.window_start,
                    window_end=window.window_end,
                    window_zone=window.local_zone,
                    suppressed=True,
                )
            )
            break
        assert isinstance(decision, Pass)
        window = next_send_time(send_at, hours, contact_zone)
        skipped = next_send_time(due, hours, contact_zone).closed_days
        out.append(
            PreviewStep(
                position=position,
                channel=channel,
                delay=delay,
                due_at=due,
                send_at=send_at,
                deferred=reason is not None,
                reason=reason,
                window_start=window.window_start,
                window_end=window.window_end,
                window_zone=window.local_zone,
                closed_days=tuple(_closed_day(hours, day) for day in skipped),
            )
        )
        previous = send_at
    return out


def _closed_day(hours: BusinessHours, day: date) -> ClosedDay:
    reason = hours.closed_reason(day) or "closed_date"
    name = hours.holidays.name_of(day) if hours.holidays is not None else None
    return ClosedDay(day=day, reason=reason, name=name)


def _facts(
    now: datetime,
    channel: str,
    hours: BusinessHours,
    contact_zone: str | None,
    valid_until: datetime,
    min_validity_left: timedelta,
) -> MessageFacts:
    return MessageFacts(
        now=now,
        channel=channel,
        paused_by=None,
        responded=False,
        valid_until=valid_until,
        step_deleted=False,
        has_address=True,
        unsubscribed=False,
        first_send=True,
        pending_token_elsewhere=False,
        max_invites_reached=False,
        business_hours=hours,
        contact_zone=contact_zone,
        dnd=DndFacts(configured=False),
        min_validity_left=min_validity_left,
    )
