"""Maintenance statements (no commit here): token expiry, delayed messages, erasure of
contact data. Each is set-based and idempotent, so several workers may run them at once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import member_of
from dispatch_engine.models import Invite, Message, OutboxEntry
from dispatch_engine.models.invite import UNDECIDED_DELAY
from dispatch_engine.store.decisions import record_for_messages

WAITING = ("pending", "deferred", "held")
# An invite keeps its contact while any of its messages may still need the address:
# waiting, failed or delayed (operators may resend those), or not yet pushed to the queue.
KEEPS_CONTACT = ("pending", "deferred", "held", "failed", "delayed")


# --- token expiry -------------------------------------------------------------------------


async def suppress_waiting_of_expired_invites(
    session: AsyncSession, now: datetime, worker: str | None = None
) -> None:
    """Waiting messages of invites whose token expired end `token_expired` (claim cleared),
    each with its `suppressed` decision in the trace."""
    expired = select(Invite.id).where(
        Invite.valid_until <= now, Invite.state.in_(("active", "completed"))
    )
    await record_for_messages(
        session,
        now,
        "suppressed",
        Message.invite_id.in_(expired),
        Message.state.in_(WAITING),
        rule="token_expired",
        reason="token_expired",
        worker=worker,
    )
    await session.execute(
        update(Message)
        .where(Message.invite_id.in_(expired), Message.state.in_(WAITING))
        .values(
            state="suppressed",
            rule="token_expired",
            reason="token_expired",
            decided_at=now,
            claim_token=None,
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )


async def expire_invites(session: AsyncSession, now: datetime) -> int:
    """Invites whose token expired become `expired` and let go of their rule-1 lock; returns
    how many."""
    result = await session.execute(
        update(Invite)
        .where(Invite.valid_until <= now, Invite.state.in_(("active", "completed")))
        .values(state="expired", end_reason="token_expired", ended_at=now, fatigue_lock=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- delayed messages ---------------------------------------------------------------------


async def mark_unclaimed_delayed(session: AsyncSession, cutoff: datetime) -> int:
    """Pending or deferred messages ready since before `cutoff` become `delayed`."""
    result = await session.execute(
        update(Message)
        .where(Message.state.in_(("pending", "deferred")), Message.not_before <= cutoff)
        .values(state="delayed", rule="queue", reason=UNDECIDED_DELAY)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def mark_unpushed_delayed(session: AsyncSession, cutoff: datetime) -> int:
    """Messages sent before `cutoff` whose queue push is still unfinished become `delayed`."""
    result = await session.execute(
        update(Message)
        .where(
            Message.state == "sent",
            Message.sent_at <= cutoff,
            Message.id.in_(
                select(OutboxEntry.message_id).where(
                    OutboxEntry.delivered_at.is_(None), OutboxEntry.failed_at.is_(None)
                )
            ),
        )
        .values(state="delayed", rule="queue", reason="not_pushed_in_time")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- erasure ------------------------------------------------------------------------------


async def finished_invites_with_contact(session: AsyncSession, limit: int) -> list[str]:
    """Up to `limit` ids of invites that still hold contact data but can send nothing more:
    ended, expired or completed, no message that may need the address, no unpushed outbox
    row."""
    return list(
        (
            await session.execute(
                select(Invite.id)
                .where(
                    Invite.contact.is_not(None),
                    Invite.state.in_(("ended", "expired", "completed")),
                    ~exists().where(
                        and_(Message.invite_id == Invite.id, Message.state.in_(KEEPS_CONTACT))
                    ),
                    ~exists().where(
                        and_(OutboxEntry.invite_id == Invite.id, OutboxEntry.delivered_at.is_(None))
                    ),
                )
                .limit(limit)
            )
        ).scalars()
    )


async def erase_invite_contacts(
    session: AsyncSession, invite_ids: Sequence[str], now: datetime
) -> None:
    """Drop the invites' contact data (address and attributes), stamping `erased_at`."""
    await session.execute(
        update(Invite)
        .where(member_of(session, Invite.id, invite_ids))
        .values(contact=None, erased_at=now)
        .execution_options(synchronize_session=False)
    )


async def delete_delivered_outbox_of(session: AsyncSession, invite_ids: Sequence[str]) -> None:
    """The invites' delivered outbox rows go: they carry the address."""
    await session.execute(
        delete(OutboxEntry)
        .where(
            member_of(session, OutboxEntry.invite_id, invite_ids),
            OutboxEntry.delivered_at.is_not(None),
        )
        .execution_options(synchronize_session=False)
    )
