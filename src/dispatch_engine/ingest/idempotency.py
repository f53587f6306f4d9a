"""Idempotency-Key handling for contact uploads, as Stripe does it: the key, a hash of the
request and the stored answer; the same key with another body is refused; a request still
in flight with the same key gets 409."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from dispatch_engine.context import AppContext
from dispatch_engine.errors import Conflict, DomainError, FieldError
from dispatch_engine.models import IdempotencyKey


class HashingStream:
    """Wraps a request body stream and hashes it as it is consumed (constant memory)."""

    def __init__(self, stream: AsyncIterator[bytes], scope: str) -> None:
        self._stream = stream
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


async def begin(
    context: AppContext, account_id: str, key: str, now: datetime
) -> IdempotencyKey | None:
    """The stored record for a replay, or None after reserving the key for this request."""
    async with context.sessions() as session, session.begin():
        existing = await session.get(IdempotencyKey, (account_id, key))
        if existing is not None:
            if existing.status_code is None:
                raise Conflict(
                    "a request with this Idempotency-Key is still being processed",
                    slug="idempotency-in-flight",
                    field_name="Idempotency-Key",
                )
            return existing
    try:
        async with context.sessions() as session, session.begin():
            session.add(
                IdempotencyKey(account_id=account_id, key=key, request_hash="", created_at=now)
            )
    except IntegrityError:
        raise Conflict(
            "a request with this Idempotency-Key is still being processed",
            slug="idempotency-in-flight",
            field_name="Idempotency-Key",
        ) from None
    return None


def check_replay(record: IdempotencyKey, request_hash: str) -> tuple[int, dict[str, Any]]:
    if record.request_hash != request_hash:
        raise DomainError(
            detail="this Idempotency-Key was used for a different request (another dispatch, "
            "content type or body)",
            errors=[FieldError("Idempotency-Key", "already used with a different request")],
            status=422,
            slug="idempotency-key-reused",
            title="Idempotency key reused",
        )
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
        record = await session.get(IdempotencyKey, (account_id, key))
        if record is not None:
            record.request_hash = request_hash
            record.status_code = status_code
            record.response = response


async def abandon(context: AppContext, account_id: str, key: str) -> None:
    """Forget a reservation whose request failed before storing anything."""
    async with context.sessions() as session, session.begin():
        record = await session.get(IdempotencyKey, (account_id, key))
        if record is not None and record.status_code is None:
            await session.delete(record)
