"""The embedded `local` queue: messages kept in the engine's own database, and every query
on them: the relay's send, the vendor's receive and ack (`api/routes/local_queue.py`), and
`queue tail`.

Re-delivery of the same message id is absorbed by a unique index, so the local queue holds
each message once even though the relay is at-least-once. A receive leases the messages it
returns (`db/leases.py`): their visibility timeout is the lease, and each gets its own
receipt, the token that acknowledges it.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch_engine.clock import Clock
from dispatch_engine.db import leases
from dispatch_engine.db.bulk import insert_rows, member_of
from dispatch_engine.models import LocalQueueMessage
from dispatch_engine.models.base import table_of
from dispatch_engine.queues.base import OutgoingMessage, SendFailure

# Visible (its `visible_at` reached) messages in order; a receive hides them until then.
LOCAL_QUEUE = leases.LeasedTable.of(
    table_of(LocalQueueMessage),
    due=lambda now: (),
    order=(LocalQueueMessage.visible_at, LocalQueueMessage.id),
    token="receipt",  # noqa: S106 (a column name)
    lease="visible_at",
    visibility=True,
)
TAIL_BATCH = 1000


class LocalQueueSender:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], account_id: str, clock: Clock
    ) -> None:
        self.sessions = sessions
        self.account_id = account_id
        self.clock = clock

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        now = self.clock.now()
        async with self.sessions() as session, session.begin():
            existing = set(
                (
                    await session.execute(
                        select(LocalQueueMessage.message_id).where(
                            member_of(
                                session,
                                LocalQueueMessage.message_id,
                                [m.message_id for m in messages],
                            )
                        )
                    )
                ).scalars()
            )
            rows = [
                {
                    "account_id": self.account_id,
                    "message_id": m.message_id,
                    "body": m.body,
                    "enqueued_at": now,
                    "visible_at": now,
                    "receive_count": 0,
                }
                for m in messages
                if m.message_id not in existing
            ]
            await insert_rows(session, table_of(LocalQueueMessage), rows)
        return []

    async def probe(self, body: bytes, message_id: str) -> None:
        await self.send_batch([OutgoingMessage(message_id, message_id, body)])

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class Received:
    receipt: str
    message_id: str
    receive_count: int
    enqueued_at: datetime
    body: bytes


async def receive(
    session: AsyncSession,
    account_id: str,
    *,
    now: datetime,
    limit: int,
    visibility: timedelta,
) -> list[Received]:
    """Up to `limit` visible messages of the account in order, each hidden for `visibility`
    under a new receipt (PostgreSQL: SKIP LOCKED, so concurrent receivers get different
    messages). In the caller's transaction."""
    rows = await leases.lock_due(
        session,
        LOCAL_QUEUE,
        now=now,
        limit=limit,
        where=[LocalQueueMessage.account_id == account_id],
    )
    received = [
        Received(
            receipt=secrets.token_urlsafe(24),
            message_id=row.message_id,
            receive_count=row.receive_count + 1,
            enqueued_at=row.enqueued_at,
            body=row.body,
        )
        for row in rows
    ]
    await leases.lease_each(
        session,
        LOCAL_QUEUE,
        {row.id: item.receipt for row, item in zip(rows, received, strict=True)},
        until=now + visibility,
        values={"receive_count": LOCAL_QUEUE.table.c.receive_count + 1},
    )
    return received


async def ack(session: AsyncSession, account_id: str, receipts: Collection[str]) -> set[str]:
    """Delete the account's messages received under `receipts`; returns the receipts that
    matched (one from an earlier receive of the same message no longer does)."""
    matched = await session.execute(
        select(LocalQueueMessage.receipt).where(
            LocalQueueMessage.account_id == account_id,
            member_of(session, LocalQueueMessage.receipt, receipts),
        )
    )
    found = {receipt for receipt in matched.scalars() if receipt is not None}
    if found:
        await session.execute(
            delete(LocalQueueMessage).where(
                LocalQueueMessage.account_id == account_id,
                member_of(session, LocalQueueMessage.receipt, found),
            )
        )
    return found


async def read_after(
    session: AsyncSession, account_id: str, after: int, *, consume: bool
) -> list[tuple[int, bytes]]:
    """`queue tail`: the account's messages stored after id `after` (at most `TAIL_BATCH`), as
    (id, body) in id order, whether received or not; deleted too when `consume`."""
    rows = [
        (row_id, body)
        for row_id, body in (
            await session.execute(
                select(LocalQueueMessage.id, LocalQueueMessage.body)
                .where(LocalQueueMessage.account_id == account_id, LocalQueueMessage.id > after)
                .order_by(LocalQueueMessage.id)
                .limit(TAIL_BATCH)
            )
        ).tuples()
    ]
    if consume and rows:
        await session.execute(
            delete(LocalQueueMessage).where(
                member_of(session, LocalQueueMessage.id, [row_id for row_id, _ in rows])
            )
        )
    return rows
