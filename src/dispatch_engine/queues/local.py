"""The embedded `local` queue: messages kept in the engine's own database: the relay's
send, the vendor's receive and ack (`api/routes/local_queue.py`), and `queue tail`. Every
query on them is in `store/local_queue.py`.

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

from dispatch_engine.clock import Clock
from dispatch_engine.db.session import AsyncSession, async_sessionmaker
from dispatch_engine.queues.base import OutgoingMessage, SendFailure
from dispatch_engine.store import local_queue as store

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
            existing = await store.stored_message_ids(session, [m.message_id for m in messages])
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
            await store.enqueue(session, rows)
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
    rows = await store.lock_visible(session, account_id, now=now, limit=limit)
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
    await store.hide(
        session,
        {row.id: item.receipt for row, item in zip(rows, received, strict=True)},
        until=now + visibility,
    )
    return received


async def ack(session: AsyncSession, account_id: str, receipts: Collection[str]) -> set[str]:
    """Delete the account's messages received under `receipts`; returns the receipts that
    matched (one from an earlier receive of the same message no longer does)."""
    found = await store.receipts_held(session, account_id, receipts)
    if found:
        await store.delete_received(session, account_id, found)
    return found


async def read_after(
    session: AsyncSession, account_id: str, after: int, *, consume: bool
) -> list[tuple[int, bytes]]:
    """`queue tail`: the account's messages stored after id `after` (at most `TAIL_BATCH`), as
    (id, body) in id order, whether received or not; deleted too when `consume`."""
    rows = await store.stored_after(session, account_id, after, TAIL_BATCH)
    if consume and rows:
        await store.delete_ids(session, [row_id for row_id, _ in rows])
    return rows
