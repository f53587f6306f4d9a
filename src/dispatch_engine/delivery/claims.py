"""Claiming due messages: exactly one worker handles each (R-SCH-1).

PostgreSQL: `FOR UPDATE SKIP LOCKED` picks rows no other transaction holds, a lease makes a
crashed worker's claims come back, and a claim token fences the write-back (a worker whose
lease was taken over cannot write). SQLite: one writer at a time (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import member_of
from dispatch_engine.delivery.lookups import (
    DUE_ORDER,
    MESSAGE_FACT_COLUMNS,
    core_rows,
    fact_columns,
)
from dispatch_engine.models import Message
from dispatch_engine.models.invite import CLAIMABLE_STATES, UNDECIDED_DELAY


def new_claim_token() -> str:
    return secrets.token_hex(16)


def _due_candidates(
    session: AsyncSession, now: datetime, limit: int, columns: Sequence[Any] = (Message.id,)
) -> Select[Any]:
    """Due, unleased messages: sandbox first, then in due order (locked on PostgreSQL)."""
    candidates = (
        select(*columns)
        .where(
            or_(
                Message.state.in_(CLAIMABLE_STATES),
                and_(Message.state == "delayed", Message.reason == UNDECIDED_DELAY),
            ),
            Message.not_before <= now,
            or_(Message.lease_until.is_(None), Message.lease_until < now),
        )
        .order_by(*DUE_ORDER)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return candidates


async def lock_due_messages(session: AsyncSession, *, now: datetime, limit: int) -> list[Any]:
    """Lock up to `limit` due messages for this transaction only (PostgreSQL, SKIP LOCKED),
    and return them in claim order with the columns the rules read (`MESSAGE_FACT_COLUMNS`):
    locked rows cannot change under the round, so they need not be read a second time.

    The fast path: a round that can decide without waiting on anything outside the database
    decides and writes back inside this same transaction, so the row locks are the claim.
    A worker that dies mid-round loses its connection, the transaction rolls back, and the
    messages are due again at once, with no lease to wait out.
    """
    columns = fact_columns(Message, MESSAGE_FACT_COLUMNS)
    return await core_rows(session, _due_candidates(session, now, limit, columns))


async def lease_messages(
    session: AsyncSession, ids: list[str], *, now: datetime, lease: timedelta
) -> str:
    """Claim locked `ids` beyond this transaction: a claim token and a lease (the slow path,
    for rounds that call webhooks). Returns the token that fences the write-back."""
    token = new_claim_token()
    await session.execute(
        update(Message)
        .where(member_of(session, Message.id, ids))
        .values(claim_token=token, lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return token


async def claim_due_messages(
    session: AsyncSession, *, now: datetime, limit: int, lease: timedelta
) -> tuple[str, list[str]]:
    """Claim up to `limit` due messages, sandbox first, then in due order.

    Returns the claim token and the claimed ids. Runs inside the caller's transaction.
    """
    ids = list((await session.execute(_due_candidates(session, now, limit))).scalars())
    if not ids:
        return new_claim_token(), ids
    return await lease_messages(session, ids, now=now, lease=lease), ids


async def still_owned(session: AsyncSession, ids: list[str], token: str) -> set[str]:
    """The claimed ids whose claim is still ours, locked until commit (the fence)."""
    if not ids:
        return set()
    query = select(Message.id).where(
        and_(member_of(session, Message.id, ids), Message.claim_token == token)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return set((await session.execute(query)).scalars())


async def release_claims(session: AsyncSession, ids: list[str], token: str) -> None:
    """Give claims back (graceful shutdown): the next round takes them at once."""
    if ids:
        await session.execute(
            update(Message)
            .where(member_of(session, Message.id, ids), Message.claim_token == token)
            .values(claim_token=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )
