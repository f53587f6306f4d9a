"""Idempotency-Key handling for contact uploads, as Stripe does it: the key, a hash of the
request and the stored answer; the same key with another request is refused; a request
still in flight with the same key gets 409.

In flight means alive: the key points at the batch its request is storing, and that batch
holds a lease the request renews (`ingest/batches.py`). A retry after the request died
(its batch `interrupted`, or its lease run out) takes the key over and carries on where
the dead request stopped, so a killed API process never leaves a key dead for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import structlog

from dispatch_engine.context import AppContext
from dispatch_engine.db.session import AsyncSession, IntegrityError
from dispatch_engine.errors import Conflict, DomainError, FieldError
from dispatch_engine.ingest import batches
from dispatch_engine.models import ContactBatch, IdempotencyKey
from dispatch_engine.store import idempotency as store
from dispatch_engine.store.batches import find_batch

log = structlog.get_logger(__name__)


class HashingStream:
    """Wraps a request body stream and hashes it as it is consumed (constant memory)."""

    def __init__(self, stream: AsyncIterator[bytes], scope: str) -> None:
        self._stream = stream
        self.scope = hashlib.sha256(scope.encode()).hexdigest()
        self._hash = hashlib.sha256(scope.encode() + b"\x00")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            self._hash.update(chunk)
            yield chunk

    async def drain(self) -> None:
        async for _ in self:
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _in_flight() -> Conflict:
    return Conflict(
        "a request with this Idempotency-Key is still being processed",
        slug="idempotency-in-flight",
        field_name="Idempotency-Key",
    )


def _reused() -> DomainError:
    return DomainError(
        detail="this Idempotency-Key was used for a different request (another dispatch, "
        "content type or body)",
        errors=[FieldError("Idempotency-Key", "already used with a different request")],
        status=422,
        slug="idempotency-key-reused",
        title="Idempotency key reused",
    )


async def begin(
    context: AppContext,
    account_id: str,
    key: str,
    *,
    scope: str,
    batch: ContactBatch,
    on_start: Callable[[AsyncSession], None],
) -> IdempotencyKey | int:
    """The stored record for a replay; or, having reserved the key for this request and
    created its `batch` (`on_start` adds what goes with it), the number of the file's
    first rows that a dead request with this key already stored (0 for a fresh key)."""
    now = batch.created_at
    async with context.sessions() as session, session.begin():
        existing = await store.get_key(session, account_id, key)
        if existing is not None:
            if existing.status_code is not None:
                return existing
            return await _take_over(session, context, existing, scope, batch, on_start, now)
    try:
        async with context.sessions() as session, session.begin():
            session.add(
                IdempotencyKey(
                    account_id=account_id,
                    key=key,
                    request_hash="",
                    created_at=now,
                    batch_id=batch.id,
                    request_scope=scope,
                )
            )
            session.add(batch)
            on_start(session)
    except IntegrityError:
        raise _in_flight() from None
    return 0


async def _take_over(
    session: AsyncSession,
    context: AppContext,
    record: IdempotencyKey,
    scope: str,
    batch: ContactBatch,
    on_start: Callable[[AsyncSession], None],
    now: datetime,
) -> int:
    """Take a key whose request died; its batch ends `interrupted`, ours carries on."""
    if record.request_scope is not None and record.request_scope != scope:
        raise _reused()
    dead = await find_batch(session, record.batch_id) if record.batch_id else None
    if dead is not None and batches.still_processing(dead, now):
        raise _in_flight()
    if dead is None and record.created_at + batches.lease(context) >= now:
        raise _in_flight()  # a reservation from before leases existed, maybe alive
    if not await store.take_over(session, record, batch_id=batch.id, scope=scope):
        raise _in_flight()  # another retry took it first
    session.add(batch)
    on_start(session)
    if dead is None:
        return 0
    await batches.interrupt(session, dead.id, now)
    await session.refresh(dead)
    await batches.carry_over(session, dead, batch)
    log.warning("idempotency_key_taken_over", batch=batch.id, interrupted=dead.id)
    return dead.rows_total


def check_replay(record: IdempotencyKey, request_hash: str) -> tuple[int, dict[str, Any]]:
    if record.request_hash != request_hash:
        raise _reused()
    return record.status_code or 202, dict(record.response or {})


async def finish(
    context: AppContext,
    account_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: dict[str, Any],
) -> None:
    async with context.sessions() as session, session.begin():
        record = await store.get_key(session, account_id, key)
        if record is not None:
            record.request_hash = request_hash
            record.status_code = status_code
            record.response = response


async def abandon(context: AppContext, account_id: str, key: str | None, batch_id: str) -> None:
    """A request that failed midway (error, client gone): its batch ends `interrupted`.
    Its key is forgotten if nothing was stored (a retry starts afresh), else kept, so a
    retry takes it over at once and carries on from the rows stored."""
    async with context.sessions() as session, session.begin():
        await batches.interrupt(session, batch_id, context.clock.now())
        if key is None:
            return
        record = await store.get_key(session, account_id, key)
        batch = await find_batch(session, batch_id)
        if record is None or record.status_code is not None or record.batch_id != batch_id:
            return
        if batch is None or (batch.rows_total == 0 and batch.resumed_from is None):
            await session.delete(record)
