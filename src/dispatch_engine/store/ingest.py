"""The upload path's queries on invites (`ingest/service.py`, `ingest/carry_forward.py`):
external ids already taken, pending-token locks (fatigue rule 1) held, released and moved,
ledger rows relabelled, and the chunk's invites inserted (COPY on PostgreSQL). In the
chunk's transaction (no commit here).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import chunks, existing_values, insert_rows, member_of
from dispatch_engine.db.conditional import relabel, update_unchanged
from dispatch_engine.models import FatigueLedger, Invite
from dispatch_engine.models.base import table_of


async def known_external_ids(
    session: AsyncSession, dispatch_id: str, external_ids: Collection[str]
) -> set[str]:
    """Those of `external_ids` an invite of the dispatch has already."""
    return await existing_values(
        session, Invite.external_id, external_ids, Invite.dispatch_id == dispatch_id
    )


async def lock_holders(
    session: AsyncSession, keys: Collection[str], now: datetime
) -> Sequence[Row[str, str | None, bool]]:
    """(invite id, lock key, stale) of the invites holding these pending-token locks, in one
    pass over the lock index. A lock whose token expired (by `now`) or was answered is
    stale: it may be released and taken again."""
    stale = or_(Invite.valid_until <= now, Invite.responded_at.is_not(None))
    return (
        await session.execute(
            select(Invite.id, Invite.fatigue_lock, stale).where(
                member_of(session, Invite.fatigue_lock, keys)
            )
        )
    ).all()


async def release_locks(session: AsyncSession, invite_ids: list[str]) -> None:
    """Clear these invites' pending-token locks (stale ones, before they are taken again)."""
    await session.execute(
        update(Invite)
        .where(member_of(session, Invite.id, invite_ids))
        .values(fatigue_lock=None)
        .execution_options(synchronize_session=False)
    )


async def insert_invites(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """A chunk's invites, in the order given (COPY on PostgreSQL)."""
    await insert_rows(session, table_of(Invite), rows)


async def relabel_ledger(session: AsyncSession, pairs: Mapping[str, str]) -> int:
    """Fatigue ledger rows of an old-key hash (`pairs`: old → new) move to the new hash;
    returns the rows moved."""
    return await relabel(session, table_of(FatigueLedger), "uuid_hash", pairs)


async def invites_holding(session: AsyncSession, keys: list[str]) -> list[Any]:
    """(invite id, lock key, uuid hash) of the invites holding these pending-token locks,
    one lookup by the unique lock index per chunk of keys."""
    holders: list[Any] = []
    for chunk in chunks(keys):
        holders.extend(
            (
                await session.execute(
                    select(Invite.id, Invite.fatigue_lock, Invite.uuid_hash).where(
                        member_of(session, Invite.fatigue_lock, chunk)
                    )
                )
            ).all()
        )
    return holders


async def move_locks(session: AsyncSession, updates: Sequence[dict[str, Any]]) -> int:
    """Give invites (`k`: id) a new lock and hash (`new_fatigue_lock`, `new_uuid_hash`),
    each only if its lock is still `old_fatigue_lock`; returns the invites moved."""
    done = await update_unchanged(
        session,
        table_of(Invite),
        "id",
        updates,
        new=["fatigue_lock", "uuid_hash"],
        old=["fatigue_lock"],
    )
    return len(done)
