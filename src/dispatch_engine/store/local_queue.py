"""The embedded `local` queue's table: every query on it, for the relay's send, the vendor's
receive and ack (`queues/local.py`, over `api/routes/local_queue.py`) and `queue tail`.
In the caller's transaction (no commit here).

A receive leases the messages it returns (`db/leases.py`): their visibility timeout is the
lease, and each gets its own receipt, the token that acknowledges it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db import leases
from dispatch_engine.db.bulk import insert_rows, member_of
from dispatch_engine.models import LocalQueueMessage
from dispatch_engine.models.base import table_of

# Visible (its `visible_at` reached) messages in order; a receive hides them until then.
LOCAL_QUEUE = leases.LeasedTable.of(
    table_of(LocalQueueMessage),
    due=lambda now: (),
    order=(LocalQueueMessage.visible_at, LocalQueueMessage.id),
    token="receipt",  # noqa: S106 (a column name)
    lease="visible_at",
    visibility=True,
)


async def stored_message_ids(session: AsyncSession, message_ids: list[str]) -> set[str]:
    """Those of `message_ids` the queue holds already (a re-delivery by the relay)."""
    return set(
        (
            await session.execute(
                select(LocalQueueMessage.message_id).where(
                    member_of(session, LocalQueueMessage.message_id, message_ids)
                )
            )
        ).scalars()
    )


async def enqueue(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Store new messages (COPY on PostgreSQL)."""
    await insert_rows(session, table_of(LocalQueueMessage), rows)


async def lock_visible(
    session: AsyncSession, account_id: str, *, now: datetime, limit: int
) -> list[Row[Any]]:
    """Up to `limit` visible messages of the account in order (PostgreSQL: SKIP LOCKED, so
    concurrent receivers get different messages)."""
    return await leases.lock_due(
        session,
        LOCAL_QUEUE,
        now=now,
        limit=limit,
        where=[LocalQueueMessage.account_id == account_id],
    )


async def hide(session: AsyncSession, receipts: Mapping[Any, str], *, until: datetime) -> None:
    """Hide received messages until `until`, each under its receipt (`receipts`: id →
    receipt), counting the receive."""
    await leases.lease_each(
        session,
        LOCAL_QUEUE,
        receipts,
        until=until,
        values={"receive_count": LOCAL_QUEUE.table.c.receive_count + 1},
    )


async def receipts_held(
    session: AsyncSession, account_id: str, receipts: Collection[str]
) -> set[str]:
    """Those of `receipts` that still name a message of the account."""
    matched = await session.execute(
        select(LocalQueueMessage.receipt).where(
            LocalQueueMessage.account_id == account_id,
            member_of(session, LocalQueueMessage.receipt, receipts),
        )
    )
    return {receipt for receipt in matched.scalars() if receipt is not None}


async def delete_received(
    session: AsyncSession, account_id: str, receipts: Collection[str]
) -> None:
    """Delete the account's messages received under `receipts`."""
    await session.execute(
        delete(LocalQueueMessage).where(
            LocalQueueMessage.account_id == account_id,
            member_of(session, LocalQueueMessage.receipt, receipts),
        )
    )


async def stored_after(
    session: AsyncSession, account_id: str, after: int, limit: int
) -> list[tuple[int, bytes]]:
    """The account's messages stored after id `after` (at most `limit`), as (id, body) in
    id order, whether received or not."""
    return [
        (row_id, body)
        for row_id, body in (
            await session.execute(
                select(LocalQueueMessage.id, LocalQueueMessage.body)
                .where(LocalQueueMessage.account_id == account_id, LocalQueueMessage.id > after)
                .order_by(LocalQueueMessage.id)
                .limit(limit)
            )
        ).tuples()
    ]


async def delete_ids(session: AsyncSession, ids: list[int]) -> None:
    """Delete these messages (by row id)."""
    await session.execute(
        delete(LocalQueueMessage).where(member_of(session, LocalQueueMessage.id, ids))
    )
