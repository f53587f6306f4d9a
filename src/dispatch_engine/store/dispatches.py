"""Dispatches: lookups, set-based pausing when their policy changes under them (R-POL-7,
R-POL-8), and their outcome counts. Each function runs inside the caller's transaction (no
commit)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import Dispatch, Invite, Message
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of


async def find_dispatch(
    session: AsyncSession, dispatch_id: str, *, lock: bool = False
) -> Dispatch | None:
    """The dispatch by id, of any account; `lock` takes its row lock (PostgreSQL)."""
    return await session.get(Dispatch, dispatch_id, with_for_update=lock or None)


async def dispatches_of_account(session: AsyncSession, account_id: str, page: PageRequest) -> Page:
    """A page of the account's dispatches, oldest first."""
    query = select(Dispatch).where(Dispatch.account_id == account_id)
    return await page_of(session, query, (Key(Dispatch.created_at), Key(Dispatch.id)), page)


async def dispatches_of_policy(session: AsyncSession, policy_id: str) -> list[Dispatch]:
    rows = await session.execute(select(Dispatch).where(Dispatch.policy_id == policy_id))
    return list(rows.scalars())


async def pause_active_dispatches(
    session: AsyncSession,
    policy_id: str,
    reason: str,
    now: datetime,
    *,
    only_ids: list[str] | None = None,
) -> list[str]:
    """Pause every active dispatch of the policy (or the listed ones) and return their ids."""
    query = select(Dispatch.id).where(Dispatch.policy_id == policy_id, Dispatch.status == "active")
    if only_ids is not None:
        query = query.where(Dispatch.id.in_(only_ids))
    ids = list((await session.execute(query.order_by(Dispatch.id))).scalars())
    if ids:
        await session.execute(
            update(Dispatch)
            .where(Dispatch.id.in_(ids))
            .values(
                status="paused",
                pause_reason=reason,
                paused_at=now,
                updated_at=now,
                version=Dispatch.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
    return ids


async def invite_state_counts(session: AsyncSession, dispatch_id: str) -> list[tuple[str, int]]:
    """(state, invites) of the dispatch, from an indexed aggregate."""
    rows = await session.execute(
        select(Invite.state, func.count())
        .where(Invite.dispatch_id == dispatch_id)
        .group_by(Invite.state)
    )
    return [(state, count) for state, count in rows.all()]


async def message_outcome_counts(
    session: AsyncSession, dispatch_id: str
) -> list[tuple[str, str | None, int]]:
    """(state, reason, messages) of the dispatch, from an indexed aggregate."""
    rows = await session.execute(
        select(Message.state, Message.reason, func.count())
        .where(Message.dispatch_id == dispatch_id)
        .group_by(Message.state, Message.reason)
    )
    return [(state, reason, count) for state, reason, count in rows.all()]
