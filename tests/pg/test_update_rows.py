"""`update_rows` writes each row's own values, whether a column varies across the rows or
holds one value for all of them (sent once, not as an array, on PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dispatch_engine.context import AppContext
from dispatch_engine.db.bulk import insert_rows, update_rows
from dispatch_engine.models import OutboxEntry
from dispatch_engine.models.base import table_of

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
OUTBOX = table_of(OutboxEntry)


async def _outbox(context: AppContext) -> dict[str, tuple[Any, ...]]:
    query = select(
        OUTBOX.c.message_id,
        OUTBOX.c.attempts,
        OUTBOX.c.claim_token,
        OUTBOX.c.lease_until,
        OUTBOX.c.last_error,
    )
    async with context.sessions() as session:
        return {row[0]: tuple(row[1:]) for row in (await session.execute(query)).all()}


async def test_constant_and_varying_columns_land_on_the_right_rows(context: AppContext) -> None:
    seeded = [
        {
            "message_id": f"m_{i}",
            "account_id": "acme",
            "invite_id": f"inv_{i}",
            "body": b"{}",
            "created_at": NOW,
            "ready_at": NOW,
            "next_attempt_at": NOW,
            "attempts": 0,
            "claim_token": f"token{i}",
            "last_error": "old",
        }
        for i in range(3)
    ]
    async with context.sessions() as session, session.begin():
        await insert_rows(session, OUTBOX, seeded)
    async with context.sessions() as session, session.begin():
        ids = dict((await session.execute(select(OUTBOX.c.message_id, OUTBOX.c.id))).all())
        await update_rows(
            session,
            OUTBOX,
            "id",
            [
                {
                    "id": ids[f"m_{i}"],
                    "attempts": i + 1,  # varies
                    "claim_token": None,  # one value (NULL) for every row
                    "lease_until": NOW + timedelta(minutes=5),  # one value for every row
                    "last_error": "timeout" if i else None,  # varies, NULL included
                }
                for i in range(2)
            ],
        )
    rows = await _outbox(context)
    assert rows["m_0"] == (1, None, NOW + timedelta(minutes=5), None)
    assert rows["m_1"] == (2, None, NOW + timedelta(minutes=5), "timeout")
    assert rows["m_2"] == (0, "token2", None, "old")  # not in the update: untouched
