"""Operator pauses (`/v1/admin/pauses`) and releasing the messages a pause held. Each
function runs inside the caller's transaction (no commit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.types import UTCDateTime
from dispatch_engine.models import Dispatch, Message, OperatorPause
from dispatch_engine.store.decisions import record_for_messages
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

# --- operator pauses ------------------------------------------------------------------------


async def active_pause_of(session: AsyncSession, scope: str, target: str) -> OperatorPause | None:
    """The pause in force on this target, if any (at most one is)."""
    return (
        await session.execute(
            select(OperatorPause).where(
                OperatorPause.scope == scope,
                OperatorPause.target == target,
                OperatorPause.lifted_at.is_(None),
            )
        )
    ).scalar_one_or_none()


PAUSE_ORDER = (Key(OperatorPause.created_at), Key(OperatorPause.id))


async def pauses_matching(
    session: AsyncSession,
    *,
    include_lifted: bool,
    scope: str | None,
    target: str | None,
    incident: str | None,
    page: PageRequest,
) -> Page:
    """A page of the pauses in force (all of them with `include_lifted`), oldest first; None
    filters nothing."""
    query = select(OperatorPause)
    if not include_lifted:
        query = query.where(OperatorPause.lifted_at.is_(None))
    if scope is not None:
        query = query.where(OperatorPause.scope == scope)
    if target is not None:
        query = query.where(OperatorPause.target == target)
    if incident is not None:
        query = query.where(OperatorPause.incident == incident)
    return await page_of(session, query, PAUSE_ORDER, page)


async def find_pause(session: AsyncSession, pause_id: str) -> OperatorPause | None:
    return await session.get(OperatorPause, pause_id)


# --- releasing held messages ----------------------------------------------------------------


async def release_held_of_dispatches(
    session: AsyncSession, now: datetime, dispatch_ids: Sequence[str]
) -> int:
    """A dispatch resumed: its held messages are decided again now."""
    return await _release_held(session, now, Message.dispatch_id.in_(list(dispatch_ids)))


async def release_held_of_policy(session: AsyncSession, now: datetime, policy_id: str) -> int:
    """A policy resumed: the held messages of its dispatches are decided again now."""
    return await _release_held(session, now, _of_policy(policy_id))


async def release_held_by_pause(session: AsyncSession, now: datetime, pause: OperatorPause) -> int:
    """An operator pause was lifted: the messages it may have been holding are decided again."""
    return await _release_held(session, now, _held_by(pause))


def _of_policy(policy_id: str) -> ColumnElement[bool]:
    return Message.dispatch_id.in_(select(Dispatch.id).where(Dispatch.policy_id == policy_id))


def _held_by(pause: OperatorPause) -> ColumnElement[bool]:
    """The messages this pause may be holding, to be decided again once it is lifted."""
    if pause.scope == "account":
        return Message.account_id == pause.target
    if pause.scope == "dispatch":
        return Message.dispatch_id == pause.target
    if pause.scope == "policy":
        return Message.dispatch_id.in_(
            select(Dispatch.id).where(Dispatch.policy_id == pause.target)
        )
    return Message.channel == pause.target


async def _release_held(
    session: AsyncSession, now: datetime, *conditions: ColumnElement[bool]
) -> int:
    """Held (paused) messages matching the conditions go back to the claim loop, which
    decides them now under the rules in force (and holds them again if still paused).
    Their look-again time is now (or later, if an edit moved them into the future) — not
    their old due time, which would read as `delayed`."""
    at_now = literal(now, UTCDateTime())
    look_again = case((Message.not_before > at_now, Message.not_before), else_=at_now)
    # The trace first, on the same condition: each released message, until when it waits.
    await record_for_messages(
        session,
        now,
        "released",
        Message.state == "held",
        *conditions,
        rule=Message.rule,
        reason="resumed",
        until=look_again,
    )
    result = await session.execute(
        update(Message)
        .where(Message.state == "held", *conditions)
        .values(
            state="pending",
            rule=None,
            reason=None,
            not_before=look_again,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
