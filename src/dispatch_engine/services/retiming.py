"""Live edits reach messages not yet sent (R-POL-7, R-POL-8): re-timing and releasing holds.

Each function is one or a few set-based statements inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.types import UTCDateTime
from dispatch_engine.models import Dispatch, Message
from dispatch_engine.models.base import table_of

WAITING = ("pending", "deferred")
RETIME_CHUNK = 5_000


async def retime_step(
    session: AsyncSession, lineup_message_id: str, old_delay: int, new_delay: int
) -> int:
    """A step's delay changed: its messages not yet sent move by the difference, at once.

    Waiting ones are decided again at their new time; held (paused) ones keep waiting for
    the resume but carry the new time with them.
    """
    shift = timedelta(seconds=new_delay - old_delay)
    if not shift:
        return 0
    rows = (
        await session.execute(
            select(Message.id, Message.due_at, Message.state, Message.reason).where(
                Message.lineup_message_id == lineup_message_id,
                Message.state.in_((*WAITING, "held")),
            )
        )
    ).all()
    table = table_of(Message)
    statement = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            due_at=bindparam("due"),
            not_before=bindparam("due"),
            state=bindparam("next_state"),
            rule=bindparam("next_rule"),
            reason=bindparam("next_reason"),
        )
    )
    params: list[dict[str, Any]] = []
    for mid, due, state, reason in rows:
        held = state == "held"
        params.append(
            {
                "b_id": mid,
                "due": due + shift,
                "next_state": "held" if held else "pending",
                "next_rule": "paused" if held else None,
                "next_reason": reason if held else None,
            }
        )
    for start in range(0, len(params), RETIME_CHUNK):
        await session.execute(statement, params[start : start + RETIME_CHUNK])
    return len(params)


async def change_step_channel(session: AsyncSession, lineup_message_id: str, channel: str) -> int:
    """A step's channel changed: its messages not yet sent go out on the new channel."""
    result = await session.execute(
        update(Message)
        .where(
            Message.lineup_message_id == lineup_message_id,
            Message.state.in_((*WAITING, "held")),
        )
        .values(channel=channel)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def skip_deleted_step(session: AsyncSession, lineup_message_id: str, now: datetime) -> int:
    """A deleted step's waiting messages are looked at now: they end `step_deleted` and their
    invites move on to the next step."""
    result = await session.execute(
        update(Message)
        .where(Message.lineup_message_id == lineup_message_id, Message.state.in_(WAITING))
        .values(not_before=now, state="pending")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def redo_business_deferrals(session: AsyncSession, policy_id: str, now: datetime) -> int:
    """Business rules changed: every message deferred by the old window is decided again
    now, under the new window (its original due time still orders it)."""
    result = await session.execute(
        update(Message)
        .where(
            Message.policy_id == policy_id,
            Message.state == "deferred",
            Message.rule == "business_window",
        )
        .values(not_before=now, state="pending")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def release_held(
    session: AsyncSession, now: datetime, *conditions: ColumnElement[bool]
) -> int:
    """Held (paused) messages matching the conditions go back to the claim loop, which
    decides them now under the rules in force (and holds them again if still paused).
    Their look-again time is now (or later, if an edit moved them into the future) — not
    their old due time, which would read as `delayed`."""
    at_now = literal(now, UTCDateTime())
    result = await session.execute(
        update(Message)
        .where(Message.state == "held", *conditions)
        .values(
            state="pending",
            rule=None,
            reason=None,
            not_before=case((Message.not_before > at_now, Message.not_before), else_=at_now),
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def of_dispatches(ids: Sequence[str]) -> ColumnElement[bool]:
    return Message.dispatch_id.in_(list(ids))


def of_policy(policy_id: str) -> ColumnElement[bool]:
    return Message.dispatch_id.in_(select(Dispatch.id).where(Dispatch.policy_id == policy_id))
