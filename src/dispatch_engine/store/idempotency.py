"""Idempotency keys of contact uploads (`ingest/idempotency.py`): read, and taken over from
a request that died. In the caller's transaction (no commit here)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import IdempotencyKey


async def get_key(session: AsyncSession, account_id: str, key: str) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (account_id, key))


async def take_over(
    session: AsyncSession,
    record: IdempotencyKey,
    *,
    batch_id: str,
    scope: str,
) -> bool:
    """Point an unanswered key at `batch_id` (and `scope`), if it still points at the batch
    `record` was read with; False when another retry took it first."""
    taken = await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.account_id == record.account_id,
            IdempotencyKey.key == record.key,
            IdempotencyKey.status_code.is_(None),
            IdempotencyKey.batch_id.is_not_distinct_from(record.batch_id),
        )
        .values(batch_id=batch_id, request_scope=scope)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]
