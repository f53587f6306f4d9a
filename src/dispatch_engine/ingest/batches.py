"""A contact file's batch from `processing` to an end, when its request may die midway.

The request storing a file holds a lease on its batch and renews it while it reads (a
heartbeat). An API process that is killed stops renewing: past the lease the batch is
taken for dead and ends `interrupted` with what it stored, either when a retry with the
same Idempotency-Key takes it over (`ingest/idempotency.py`) or when the maintenance job
finds it. Every chunk's transaction checks that its batch is still `processing` (the
fence): a request that was only stalled, and whose batch was taken over meanwhile,
stores nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

import structlog

from dispatch_engine.context import AppContext
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import Conflict
from dispatch_engine.models import ContactBatch
from dispatch_engine.store import batches as store

log = structlog.get_logger(__name__)
INTERRUPTED_ERROR = (
    "the request storing this file stopped before its end (process killed or connection "
    "lost); the rows counted were stored, the rest were not read"
)


class BatchTakenOver(Conflict):
    """The batch is no longer this request's: it was taken for dead and interrupted."""

    def __init__(self) -> None:
        super().__init__(
            "this upload stalled past its lease and was taken over by a retry with the same "
            "Idempotency-Key; the retry stores the rest of the file",
            slug="upload-taken-over",
        )


def lease(context: AppContext) -> timedelta:
    return timedelta(seconds=context.settings.upload_lease_seconds)


def new_batch(
    context: AppContext,
    batch_id: str,
    *,
    account_id: str,
    dispatch_id: str,
    media: str,
    now: datetime,
) -> ContactBatch:
    return ContactBatch(
        id=batch_id,
        account_id=account_id,
        dispatch_id=dispatch_id,
        status="processing",
        content_type=media,
        created_at=now,
        lease_until=now + lease(context),
    )


@asynccontextmanager
async def heartbeat(context: AppContext, batch_id: str) -> AsyncIterator[None]:
    """Renew the batch's lease every third of it while the block runs."""
    period = context.settings.upload_lease_seconds / 3

    async def beat() -> None:
        while True:
            await asyncio.sleep(period)
            try:
                async with context.sessions() as session, session.begin():
                    await store.renew_lease(session, batch_id, context.clock.now() + lease(context))
            except Exception as exc:  # the next beat tries again; the fence guards the rest
                log.warning("upload_lease_renewal_failed", error_type=type(exc).__name__)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def check_fence(rowcount: int | None) -> None:
    if not rowcount:
        raise BatchTakenOver()


async def interrupt(session: AsyncSession, batch_id: str, now: datetime) -> bool:
    """End a `processing` batch as `interrupted`; False when it had ended already."""
    return await store.interrupt(session, batch_id, now, INTERRUPTED_ERROR)


async def interrupt_expired(session: AsyncSession, now: datetime) -> int:
    """Maintenance: every `processing` batch whose request stopped renewing its lease."""
    count = await store.interrupt_expired(session, now, INTERRUPTED_ERROR)
    if count:
        log.warning("contact_batches_interrupted", count=count)
    return count


async def carry_over(session: AsyncSession, dead: ContactBatch, batch: ContactBatch) -> None:
    """Start `batch` where the interrupted `dead` one stopped: its counts and rejected rows,
    so the retry's answer accounts for the whole file. Its invites stay under `dead`."""
    batch.resumed_from = dead.id
    batch.rows_total = dead.rows_total
    batch.accepted = dead.accepted
    batch.rejected = dead.rejected
    batch.duplicates = dead.duplicates
    await session.flush()
    await store.copy_rejected_rows(session, dead.id, batch.id)


async def skip_rows(
    rows: AsyncIterator[tuple[int, dict[str, Any]]], count: int
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """The file's rows after the first `count` (stored by the interrupted batch: chunks
    commit in file order, each with its count, so they are exactly the first ones)."""
    seen = 0
    async for item in rows:
        seen += 1
        if seen > count:
            yield item


def still_processing(batch: ContactBatch, now: datetime) -> bool:
    return batch.status == "processing" and (
        batch.lease_until is not None and batch.lease_until >= now
    )
