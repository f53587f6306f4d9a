"""The embedded `local` queue: messages kept in the engine's own database.

Re-delivery of the same message id is absorbed by a unique index, so the local queue holds
each message once even though the relay is at-least-once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch_engine.clock import Clock
from dispatch_engine.db.bulk import insert_rows, member_of
from dispatch_engine.models import LocalQueueMessage
from dispatch_engine.models.base import table_of
from dispatch_engine.queues.base import OutgoingMessage, SendFailure


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
