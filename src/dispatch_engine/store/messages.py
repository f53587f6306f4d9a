"""Messages: claiming due messages (exactly one worker handles each, R-SCH-1) and writing a
decided batch back, set-based, in the caller's transaction (no commit here).

The messages' lease description (`MESSAGES`) for the shared mechanism in `db/leases.py`:
PostgreSQL's `FOR UPDATE SKIP LOCKED` picks rows no other transaction holds, a lease makes a
crashed worker's claims come back, and a claim token fences the write-back (a worker whose
lease was taken over cannot write). SQLite: one writer at a time (BEGIN IMMEDIATE).

The write-back (`delivery/engine.py`) is a handful of statements for the whole batch:
messages marked, next steps and first messages inserted (COPY on PostgreSQL), fatigue ledger
rows of the sends, and the invites' fatigue locks and states.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db import leases
from dispatch_engine.db.bulk import insert_rows, member_of, update_rows
from dispatch_engine.db.dialect import has_row_locks
from dispatch_engine.models import FatigueLedger, Invite, Message
from dispatch_engine.models.base import table_of
from dispatch_engine.models.invite import CLAIMABLE_STATES, UNDECIDED_DELAY
from dispatch_engine.store.decisions import record_for_messages
from dispatch_engine.store.lookups import DUE_ORDER, MESSAGE_FACT_COLUMNS, fact_columns

# Due: claimable (the claim index's predicate, `CLAIMABLE_PREDICATE`) and not before now;
# sandbox first, then in due order (the index's columns).
MESSAGES = leases.LeasedTable.of(
    table_of(Message),
    due=lambda now: (
        or_(
            Message.state.in_(CLAIMABLE_STATES),
            and_(Message.state == "delayed", Message.reason == UNDECIDED_DELAY),
        ),
        Message.not_before <= now,
    ),
    order=DUE_ORDER,
)


def _due_candidates(
    session: AsyncSession, now: datetime, limit: int, columns: Sequence[Any] = (Message.id,)
) -> Select[Any]:
    """Due, unleased messages: sandbox first, then in due order (locked on PostgreSQL)."""
    skip_locked = has_row_locks(session)
    return leases.due_query(
        MESSAGES, now=now, limit=limit, columns=columns, skip_locked=skip_locked
    )


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
    return await leases.lock_due(session, MESSAGES, now=now, limit=limit, columns=columns)


async def lease_messages(
    session: AsyncSession, ids: list[str], *, now: datetime, lease: timedelta
) -> str:
    """Claim locked `ids` beyond this transaction: a claim token and a lease (the slow path,
    for rounds that call webhooks). Returns the token that fences the write-back."""
    return await leases.lease_locked(session, MESSAGES, ids, now=now, lease=lease)


async def claim_due_messages(
    session: AsyncSession, *, now: datetime, limit: int, lease: timedelta
) -> tuple[str, list[str]]:
    """Claim up to `limit` due messages, sandbox first, then in due order.

    Returns the claim token and the claimed ids. Runs inside the caller's transaction.
    """
    token, rows = await leases.claim(
        session, MESSAGES, now=now, limit=limit, lease=lease, columns=(MESSAGES.id,)
    )
    return token, [row.id for row in rows]


async def still_owned(session: AsyncSession, ids: list[str], token: str) -> set[str]:
    """The claimed ids whose claim is still ours, locked until commit (the fence)."""
    return await leases.still_owned(session, MESSAGES, ids, token)


async def release_claims(session: AsyncSession, ids: list[str], token: str) -> None:
    """Give claims back (graceful shutdown): the next round takes them at once."""
    await leases.release(session, MESSAGES, ids, token)


async def update_messages(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Each message of `rows` (by `id`) gets its own values; all rows have the same keys."""
    await update_rows(session, table_of(Message), "id", rows)


async def insert_messages(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """New messages (first messages of an upload, next lineup steps): COPY on PostgreSQL."""
    await insert_rows(session, table_of(Message), rows)


async def insert_ledger(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Fatigue ledger rows of a batch's first sends (written with the sends, R-RUL-2)."""
    await insert_rows(session, table_of(FatigueLedger), rows)


async def release_invite_locks(session: AsyncSession, invite_ids: list[str]) -> None:
    """Clear the pending-token locks of these invites (stale holders whose lock a send of
    this batch takes over): run before any invite of the batch takes a lock."""
    invites = table_of(Invite)
    await session.execute(
        update(invites)
        .where(member_of(session, invites.c.id, invite_ids))
        .values(fatigue_lock=None)
    )


async def update_invites(session: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """Each invite of `rows` (by `id`) gets its own values: one statement per set of
    columns changed."""
    invites = table_of(Invite)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in rows:
        groups.setdefault(tuple(sorted(values)), []).append(values)
    for group in groups.values():
        await update_rows(session, invites, "id", group)


async def mark_sent_again(session: AsyncSession, message_ids: list[str]) -> None:
    """Messages marked `delayed` whose push went through after all read `sent` again."""
    await session.execute(
        update(Message)
        .where(member_of(session, Message.id, message_ids), Message.state == "delayed")
        .values(state="sent", rule=None, reason=None)
        .execution_options(synchronize_session=False)
    )


async def mark_failed(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    now: datetime | None = None,
    worker: str | None = None,
) -> None:
    """Messages whose queue push was given up: `failed`, each with its reason (`rows`: the
    message id as `b_id` and `reason`), and (given `now`) a `failed` decision in the trace."""
    if now is not None:  # the trace keeps a slug: the queue's error text stays on the message
        ids = [row["b_id"] for row in rows]
        await record_for_messages(
            session,
            now,
            "failed",
            member_of(session, Message.id, ids),
            rule="queue",
            reason="push_failed",
            worker=worker,
        )
    messages = table_of(Message)
    await session.execute(
        update(messages)
        .where(messages.c.id == bindparam("b_id"))
        .values(state="failed", rule="queue", reason=bindparam("reason")),
        list(rows),
    )
