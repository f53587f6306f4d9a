"""Maintenance jobs: token expiry and erasure of contact data (R-INV-3, R-INV-5).

Both are idempotent and set-based, so several workers may run them at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import member_of
from dispatch_engine.models import Invite, Message, OutboxEntry
from dispatch_engine.models.invite import UNDECIDED_DELAY

WAITING = ("pending", "deferred", "held")
# An invite keeps its contact while any of its messages may still need the address:
# waiting, failed or delayed (operators may resend those), or not yet pushed to the queue.
KEEPS_CONTACT = ("pending", "deferred", "held", "failed", "delayed")
ERASE_BATCH = 5_000


async def expire_tokens(session: AsyncSession, now: datetime) -> int:
    """Invites whose token expired: waiting messages end `token_expired`, rule 1 lets go."""
    expired = select(Invite.id).where(
        Invite.valid_until <= now, Invite.state.in_(("active", "completed"))
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
    result = await session.execute(
        update(Invite)
        .where(Invite.valid_until <= now, Invite.state.in_(("active", "completed")))
        .values(state="expired", end_reason="token_expired", ended_at=now, fatigue_lock=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def mark_delayed(session: AsyncSession, now: datetime, after: timedelta) -> int:
    """R-Q-2: a message stuck past its due time — not by a rule or a pause — is `delayed`.

    Two ways to be stuck: never claimed (no worker, a backlog) — whether it was pending or
    deferred to a window or a DND retry that has come — or passed by the rules but its queue
    push not yet acknowledged. The claim loop and the relay turn a delayed message back into
    `sent` (or `failed`, or deferred again) when they get to it.
    """
    cutoff = now - after
    unclaimed = await session.execute(
        update(Message)
        .where(Message.state.in_(("pending", "deferred")), Message.not_before <= cutoff)
        .values(state="delayed", rule="queue", reason=UNDECIDED_DELAY)
        .execution_options(synchronize_session=False)
    )
    unpushed = await session.execute(
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
    return int((unclaimed.rowcount or 0) + (unpushed.rowcount or 0))  # type: ignore[attr-defined]


async def erase_finished_contacts(session: AsyncSession, now: datetime) -> int:
    """Erase addresses and attributes of invites that can send nothing more.

    What stays: hashes, times, states and reasons — what counts and fatigue need. The
    delivered outbox rows of those invites (they carry the address) go too.
    """
    candidates = list(
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
                .limit(ERASE_BATCH)
            )
        ).scalars()
    )
    if not candidates:
        return 0
    await session.execute(
        update(Invite)
        .where(member_of(session, Invite.id, candidates))
        .values(contact=None, erased_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(OutboxEntry)
        .where(
            member_of(session, OutboxEntry.invite_id, candidates),
            OutboxEntry.delivered_at.is_not(None),
        )
        .execution_options(synchronize_session=False)
    )
    return len(candidates)
