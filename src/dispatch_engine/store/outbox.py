"""The outbox: rows written with each send, taken by the relay (`delivery/relay.py`), pushed
to the account's queue and deleted once the queue acknowledged; and the queue integrations'
health as the relay sees it. Every function runs in the caller's transaction (no commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import DOUBLE_PRECISION, case, cast, extract, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db import leases
from dispatch_engine.db.bulk import insert_rows, member_of
from dispatch_engine.db.dialect import has_row_locks
from dispatch_engine.models import OutboxEntry, QueueIntegration
from dispatch_engine.models.base import table_of


class DueRow(NamedTuple):
    """An outbox row taken for a round: what the push and the write-back need, no more."""

    id: int
    message_id: str
    account_id: str
    invite_id: str
    body: bytes
    ready_at: float  # epoch seconds: the latency histogram and the `delayed` check subtract it
    attempts: int


# Due: not delivered, not given up, its next attempt reached (the pending index's order).
OUTBOX = leases.LeasedTable.of(
    table_of(OutboxEntry),
    due=lambda now: (
        OutboxEntry.delivered_at.is_(None),
        OutboxEntry.failed_at.is_(None),
        OutboxEntry.next_attempt_at <= now,
    ),
    order=(OutboxEntry.next_attempt_at, OutboxEntry.id),
)
_outbox = OUTBOX.table
_DUE_COLUMNS = (
    _outbox.c.id,
    _outbox.c.message_id,
    _outbox.c.account_id,
    _outbox.c.invite_id,
    _outbox.c.body,
    _outbox.c.ready_at,
    _outbox.c.attempts,
)
# PostgreSQL reads due rows straight through asyncpg: a round's 500 rows skip SQLAlchemy's
# per-row result processing, a fifth of the relay's own CPU per message. `ready_at` comes
# as epoch seconds.
_PG_DUE_ROWS = leases.pg_due_statement(
    OUTBOX,
    [
        *_DUE_COLUMNS[:5],
        cast(extract("epoch", _outbox.c.ready_at), DOUBLE_PRECISION),
        _outbox.c.attempts,
    ],
)


async def insert_outbox(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Outbox rows of a batch's sends (COPY on PostgreSQL), committed with the sends."""
    await insert_rows(session, table_of(OutboxEntry), rows)


async def due_rows(session: AsyncSession, now: datetime, limit: int) -> list[DueRow]:
    """Due outbox rows in order (locked on PostgreSQL: the locks are the claim)."""
    if has_row_locks(session):
        records = await leases.fetch_locked(session, _PG_DUE_ROWS, now=now, limit=limit)
        return [DueRow(*record) for record in records]
    rows = await leases.lock_due(session, OUTBOX, now=now, limit=limit, columns=_DUE_COLUMNS)
    return [
        DueRow(
            r.id,
            r.message_id,
            r.account_id,
            r.invite_id,
            r.body,
            r.ready_at.timestamp(),
            r.attempts,
        )
        for r in rows
    ]


async def lease_rows(
    session: AsyncSession, ids: list[int], *, now: datetime, lease: timedelta
) -> str:
    """The lease path (SQLite): claim token + lease on rows this transaction selected."""
    return await leases.lease_locked(session, OUTBOX, ids, now=now, lease=lease)


async def release_rows(session: AsyncSession, ids: list[int], token: str) -> None:
    """Hand back rows still held under `token` (a round cut short): due again at once."""
    await leases.release(session, OUTBOX, ids, token)


async def delete_delivered(session: AsyncSession, token: str | None, ids: list[int]) -> None:
    """Delete rows the queue acknowledged (fenced by `token` when leased)."""
    await leases.delete_owned(session, OUTBOX, token, ids)


async def write_back(
    session: AsyncSession, token: str | None, rows: Sequence[dict[str, Any]]
) -> None:
    """Per-row retry/give-up values (`b_id` and the columns); the claim ends with it."""
    await leases.write_back(session, OUTBOX, token, rows)


async def integrations_of(
    session: AsyncSession, account_ids: set[str]
) -> dict[str, QueueIntegration]:
    """The queue integration of each of these accounts (those that have one)."""
    integrations = (
        await session.execute(
            select(QueueIntegration).where(
                member_of(session, QueueIntegration.account_id, account_ids)
            )
        )
    ).scalars()
    return {i.account_id: i for i in integrations}


async def record_push_health(
    session: AsyncSession, account_id: str, version: int, error: str | None, now: datetime
) -> None:
    """Show a refusal of the whole push on the integration (`error`), or clear it (None).
    Fenced by version: a replaced integration starts clean."""
    table = table_of(QueueIntegration)
    # Parallel lanes may report the same error: the first one's time is kept.
    since = case((table.c.push_error == error, table.c.push_error_at), else_=now)
    await session.execute(
        update(table)
        .where(table.c.account_id == account_id, table.c.version == version)
        .values(push_error=error, push_error_at=since if error is not None else None)
    )


async def depth(session: AsyncSession) -> tuple[int, datetime | None]:
    """Outbox rows waiting (not delivered, not given up) and the oldest one's creation."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(OutboxEntry.created_at)).where(
                OutboxEntry.delivered_at.is_(None), OutboxEntry.failed_at.is_(None)
            )
        )
    ).one()
    return count, oldest


async def integrations_refusing(session: AsyncSession) -> int:
    """Queue integrations whose queue refuses pushes now."""
    refusing: int = (
        await session.execute(select(func.count()).where(QueueIntegration.push_error.is_not(None)))
    ).scalar_one()
    return refusing
