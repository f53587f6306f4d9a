"""Upload batches (a contact file's progress) and their rejected rows: the queries of
`ingest/batches.py` and of the ingest chunks' counters. In the caller's transaction (no
commit here).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import insert_rows
from dispatch_engine.models import ContactBatch, RejectedRow
from dispatch_engine.models.base import table_of


async def find_batch(
    session: AsyncSession, batch_id: str, *, lock: bool = False
) -> ContactBatch | None:
    """The contact batch by id, of any account; `lock` takes its row lock (PostgreSQL)."""
    return await session.get(ContactBatch, batch_id, with_for_update=lock or None)


async def rejected_rows_after(
    session: AsyncSession, batch_id: str, after: int, limit: int
) -> list[RejectedRow]:
    """Up to `limit` rejected rows of the batch after row number `after`, in file order."""
    return list(
        (
            await session.execute(
                select(RejectedRow)
                .where(RejectedRow.batch_id == batch_id, RejectedRow.row_number > after)
                .order_by(RejectedRow.row_number)
                .limit(limit)
            )
        ).scalars()
    )


async def renew_lease(session: AsyncSession, batch_id: str, until: datetime) -> None:
    """Move a `processing` batch's lease to `until` (the heartbeat of its request)."""
    await session.execute(
        update(ContactBatch)
        .where(ContactBatch.id == batch_id, ContactBatch.status == "processing")
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )


def _progress_fence(batch_id: str) -> Any:
    """The WHERE of a chunk's counter update: the batch is still this request's."""
    return (ContactBatch.id == batch_id) & (ContactBatch.status == "processing")


async def add_progress(
    session: AsyncSession,
    batch_id: str,
    *,
    rows: int,
    accepted: int,
    rejected: int,
    duplicates: int,
) -> int:
    """Add a chunk's counts to its batch, if the batch is still `processing` (the fence);
    returns the rows updated (0: the batch was taken over)."""
    progressed = await session.execute(
        update(ContactBatch)
        .where(_progress_fence(batch_id))
        .values(
            rows_total=ContactBatch.rows_total + rows,
            accepted=ContactBatch.accepted + accepted,
            rejected=ContactBatch.rejected + rejected,
            duplicates=ContactBatch.duplicates + duplicates,
        )
        .execution_options(synchronize_session=False)
    )
    return int(progressed.rowcount or 0)  # type: ignore[attr-defined]


async def insert_rejected_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """A chunk's rejected rows (batch_id, row_number, field, reason): COPY on PostgreSQL."""
    await insert_rows(session, table_of(RejectedRow), rows)


async def interrupt(session: AsyncSession, batch_id: str, now: datetime, error: str) -> bool:
    """End a `processing` batch as `interrupted`; False when it had ended already."""
    result = await session.execute(
        update(ContactBatch)
        .where(ContactBatch.id == batch_id, ContactBatch.status == "processing")
        .values(status="interrupted", error=error, finished_at=now, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def interrupt_expired(session: AsyncSession, now: datetime, error: str) -> int:
    """End every `processing` batch whose lease ran out as `interrupted`; returns how many."""
    result = await session.execute(
        update(ContactBatch)
        .where(ContactBatch.status == "processing", ContactBatch.lease_until < now)
        .values(status="interrupted", error=error, finished_at=now, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def copy_rejected_rows(session: AsyncSession, from_batch: str, to_batch: str) -> None:
    """The rejected rows of `from_batch`, again under `to_batch` (one INSERT … SELECT)."""
    copied = select(
        literal(to_batch, RejectedRow.batch_id.type),
        RejectedRow.row_number,
        RejectedRow.field,
        RejectedRow.reason,
    ).where(RejectedRow.batch_id == from_batch)
    await session.execute(
        insert(RejectedRow).from_select(["batch_id", "row_number", "field", "reason"], copied)
    )
