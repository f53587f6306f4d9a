"""Invites and their messages as the API reads and stops them, and the contact batches they
were uploaded in (no commit here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import Invite, Message

PENDING_STATES = ("pending", "deferred", "held")


# --- invites --------------------------------------------------------------------------------


async def find_invite(session: AsyncSession, invite_id: str) -> Invite | None:
    """The invite by id, of any account."""
    return await session.get(Invite, invite_id)


async def invite_of_token(session: AsyncSession, account_id: str, token: str) -> Invite | None:
    return (
        await session.execute(
            select(Invite).where(Invite.token == token, Invite.account_id == account_id)
        )
    ).scalar_one_or_none()


async def invites_matching(
    session: AsyncSession,
    account_id: str,
    *,
    token: str | None,
    external_id: str | None,
    dispatch_id: str | None,
    limit: int,
) -> list[Invite]:
    """The account's invites with this token / external id / dispatch (a falsy value filters
    nothing), oldest first."""
    query = select(Invite).where(Invite.account_id == account_id)
    if token:
        query = query.where(Invite.token == token)
    if external_id:
        query = query.where(Invite.external_id == external_id)
    if dispatch_id:
        query = query.where(Invite.dispatch_id == dispatch_id)
    return list(
        (await session.execute(query.order_by(Invite.created_at, Invite.id).limit(limit))).scalars()
    )


async def messages_of_invites(session: AsyncSession, invite_ids: Sequence[str]) -> list[Message]:
    """Every message of these invites, in creation order."""
    rows = await session.execute(
        select(Message)
        .where(Message.invite_id.in_(list(invite_ids)))
        .order_by(Message.created_at, Message.position, Message.id)
    )
    return list(rows.scalars())


async def suppress_pending_messages(session: AsyncSession, invite_id: str, now: datetime) -> int:
    """The person answered: the invite's messages not yet sent end `responded` (a claim on
    them is void). Returns how many."""
    stopped = await session.execute(
        update(Message)
        .where(Message.invite_id == invite_id, Message.state.in_(PENDING_STATES))
        .values(
            state="suppressed",
            rule="responded",
            reason="responded",
            decided_at=now,
            claim_token=None,
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(stopped.rowcount or 0)  # type: ignore[attr-defined]


# --- contact batches ------------------------------------------------------------------------
