"""Leases: rows that exactly one worker handles at a time, and the backoff between tries.

Four tables are worked this way, each described once by its owner as a `LeasedTable`:
messages (`store/messages.py`), the outbox (`store/outbox.py`), incident notifications
(`store/notifications.py`) and the local queue (`store/local_queue.py`, whose lease is
its visibility timeout and whose tokens are per-message receipts).

A row is taken in one of two ways:

- **Locks** (PostgreSQL): `lock_due` selects due rows `FOR UPDATE SKIP LOCKED`; another
  worker's select skips them. A caller that finishes inside that same transaction needs no
  more: the row locks are the claim, and a worker that dies loses its connection, the
  transaction rolls back and the rows are due again at once. Its write-back passes
  `token=None`. The hot paths read and delete through asyncpg directly (`pg_due_statement`,
  `fetch_locked`, `delete_owned`).
- **Lease**: `claim` (or `lock_due`, then `lease_locked`) writes a claim token and the
  lease's end, committed before the slow part (a webhook, a queue push), so no lock is held
  meanwhile. Every write-back is fenced by the token (`still_owned`, `write_back`,
  `delete_owned`): a worker whose lease ran out and was taken over writes nothing. `release`
  hands rows back at shutdown; a crashed worker's rows come back when the lease ends. SQLite
  has no row locks (one writer, BEGIN IMMEDIATE), so it always takes this path.

Retries of a failed row wait `backoff` (full jitter), as do transactions that PostgreSQL
aborted to break a deadlock (`db/transient.py`).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from dispatch_engine.db.bulk import asyncpg_connection, dialect_of, member_of, pg_array_type

DuePredicate = Callable[[Any], Sequence[ColumnElement[bool]]]
LeaseColumn = ColumnElement[Any] | InstrumentedAttribute[Any]


def new_token() -> str:
    """A claim token (32 hex characters, the claim_token columns' width)."""
    return secrets.token_hex(16)


@dataclass(frozen=True, eq=False)  # compared by identity: its fields are SQL expressions
class LeasedTable:
    """A table whose rows are claimed: what makes a row due, the claim order, and the
    columns that hold its claim.

    `due(now)` gives the row's own readiness (state, attempt time); `lock_due` adds that the
    row is not leased. `visibility`: the lease column is when the row becomes visible (a
    queue's visibility timeout: never NULL, due once reached) rather than when a lease ends
    (NULL or passed).
    """

    table: Table
    due: DuePredicate
    order: tuple[ColumnElement[Any], ...]
    id: Column[Any]
    token: Column[Any]
    lease: Column[Any]
    visibility: bool = False

    @classmethod
    def of(
        cls,
        table: Table,
        *,
        due: DuePredicate,
        order: Sequence[Any],
        id: str = "id",
        token: str = "claim_token",  # noqa: S107 (a column name)
        lease: str = "lease_until",
        visibility: bool = False,
    ) -> LeasedTable:
        return cls(
            table=table,
            due=due,
            order=tuple(order),
            id=table.c[id],
            token=table.c[token],
            lease=table.c[lease],
            visibility=visibility,
        )

    def unleased(self, now: Any) -> ColumnElement[bool]:
        if self.visibility:
            visible: ColumnElement[bool] = self.lease <= now
            return visible
        return lease_free(self.lease, now)


def lease_free(lease: LeaseColumn, now: Any) -> ColumnElement[bool]:
    """Not leased at `now`: never leased, handed back, or the lease has ended."""
    return or_(lease.is_(None), lease < now)


def lease_held(lease: LeaseColumn, now: Any) -> ColumnElement[bool]:
    """Leased at `now` (the opposite of `lease_free`): a worker holds the row."""
    return and_(lease.is_not(None), lease >= now)


def due_query(
    spec: LeasedTable,
    *,
    now: Any,
    limit: Any,
    columns: Sequence[Any] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    skip_locked: bool,
) -> Select[Any]:
    """Due, unleased rows of `spec` in claim order (`columns`: all by default), locked with
    SKIP LOCKED when `skip_locked` (PostgreSQL)."""
    query = (
        select(*(columns if columns is not None else spec.table.c))
        .where(*where, *spec.due(now), spec.unleased(now))
        .order_by(*spec.order)
        .limit(limit)
    )
    return query.with_for_update(skip_locked=True) if skip_locked else query


async def lock_due(
    session: AsyncSession,
    spec: LeasedTable,
    *,
    now: datetime,
    limit: int,
    columns: Sequence[Any] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[Row[Any]]:
    """Up to `limit` due rows in claim order, locked until this transaction ends on
    PostgreSQL (SKIP LOCKED). Read on the session's connection, past the ORM's result layer
    (its per-row work costs more than the rest of reading a batch)."""
    query = due_query(
        spec,
        now=now,
        limit=limit,
        columns=columns,
        where=where,
        skip_locked=dialect_of(session) == "postgresql",
    )
    return list((await (await session.connection()).execute(query)).all())


def pg_due_statement(spec: LeasedTable, columns: Sequence[Any]) -> str:
    """`lock_due` of `spec` as PostgreSQL text for `fetch_locked` ($1 now, $2 limit), built
    once: a hot path's rows then skip SQLAlchemy's per-row result processing, and asyncpg
    prepares the statement once per connection."""
    now: BindParameter[datetime] = bindparam("now")
    limit: BindParameter[int] = bindparam("limit")
    query = due_query(spec, now=now, limit=limit, columns=columns, skip_locked=True)
    compiled = query.compile(dialect=pg_asyncpg.dialect())  # type: ignore[no-untyped-call]
    assert list(compiled.positiontup or ()) == ["now", "limit"], compiled.positiontup
    return compiled.string


async def fetch_locked(
    session: AsyncSession, statement: str, *, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Run a `pg_due_statement` in the session's transaction (PostgreSQL)."""
    driver = await asyncpg_connection(session)
    return list(await driver.fetch(statement, now, limit))


async def lease_locked(
    session: AsyncSession,
    spec: LeasedTable,
    ids: Collection[Any],
    *,
    now: datetime,
    lease: timedelta,
    token: str | None = None,
) -> str:
    """Claim `ids` (locked or just selected by this transaction) beyond it: one token and a
    lease for all. Returns the token that fences their write-back."""
    token = token or new_token()
    await session.execute(
        update(spec.table)
        .where(member_of(session, spec.id, ids))
        .values({spec.token.key: token, spec.lease.key: now + lease})
    )
    return token


async def lease_each(
    session: AsyncSession,
    spec: LeasedTable,
    tokens: Mapping[Any, str],
    *,
    until: datetime,
    values: Mapping[str, Any] | None = None,
) -> None:
    """Lease rows each under its own token (`tokens`: id → token), until `until`, setting
    `values` too: a queue's receipts, where each message is acknowledged alone."""
    if not tokens:
        return
    await session.execute(
        update(spec.table)
        .where(spec.id == bindparam("b_id"))
        .values({spec.token.key: bindparam("b_token"), spec.lease.key: until, **(values or {})}),
        [{"b_id": row_id, "b_token": token} for row_id, token in tokens.items()],
    )


async def claim(
    session: AsyncSession,
    spec: LeasedTable,
    *,
    now: datetime,
    limit: int,
    lease: timedelta,
    columns: Sequence[Any] | None = None,
) -> tuple[str, list[Row[Any]]]:
    """`lock_due` then `lease_locked`: up to `limit` due rows claimed under one new token, in
    the caller's transaction. `columns` must include the id."""
    token = new_token()
    rows = await lock_due(session, spec, now=now, limit=limit, columns=columns)
    if rows:
        ids = [getattr(row, spec.id.key) for row in rows]
        await lease_locked(session, spec, ids, now=now, lease=lease, token=token)
    return token, rows


async def still_owned(
    session: AsyncSession, spec: LeasedTable, ids: Collection[Any], token: str
) -> set[Any]:
    """The fence: those of `ids` whose claim is still `token`'s, locked until commit
    (PostgreSQL) so the claim cannot be taken over before the write-back commits."""
    if not ids:
        return set()
    query = select(spec.id).where(member_of(session, spec.id, ids), spec.token == token)
    if dialect_of(session) == "postgresql":
        query = query.with_for_update()
    return set((await session.execute(query)).scalars())


async def release(
    session: AsyncSession, spec: LeasedTable, ids: Collection[Any], token: str
) -> None:
    """Hand back rows still held under `token` (graceful shutdown): due again at once."""
    if ids:
        await session.execute(
            update(spec.table)
            .where(member_of(session, spec.id, ids), spec.token == token)
            .values({spec.token.key: None, spec.lease.key: None})
        )


async def write_back(
    session: AsyncSession,
    spec: LeasedTable,
    token: str | None,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Per-row updates that end the claim (token and lease cleared). Each of `rows` holds the
    row's id as `b_id` and the columns to set; all have the same keys. Fenced by `token`
    when the rows were leased; `None` when this transaction's locks hold them."""
    if not rows:
        return
    fence = spec.id == bindparam("b_id")
    if token is not None:
        fence = fence & (spec.token == token)
    values: dict[str, Any] = {key: bindparam(key) for key in rows[0] if key != "b_id"}
    values |= {spec.token.key: None, spec.lease.key: None}
    await session.execute(update(spec.table).where(fence).values(values), list(rows))


async def delete_owned(
    session: AsyncSession, spec: LeasedTable, token: str | None, ids: Collection[Any]
) -> None:
    """Delete finished rows: by id alone under this transaction's locks (`token` None; on
    PostgreSQL one prepared statement straight through asyncpg), else only those still held
    under `token`."""
    if not ids:
        return
    if token is None and dialect_of(session) == "postgresql":
        driver = await asyncpg_connection(session)
        await driver.execute(_pg_delete_statement(spec), list(ids))
        return
    done = delete(spec.table).where(member_of(session, spec.id, ids))
    if token is not None:
        done = done.where(spec.token == token)
    await session.execute(done)


def _pg_delete_statement(spec: LeasedTable) -> str:
    # Identifiers come from the table's own metadata; the ids travel as one array parameter.
    return (
        f'DELETE FROM "{spec.table.name}" '  # noqa: S608
        f'WHERE "{spec.id.name}" = ANY($1::{pg_array_type(spec.id)}[])'
    )


def backoff(attempt: int, base: float, cap: float, *, jitter: bool = True) -> timedelta:
    """Exponential backoff (attempt 1 → `base` seconds, doubling, at most `cap`) with full
    jitter: a uniform draw below that bound, so racers that collided once (transactions,
    relays retrying one queue) do not collide again in step. `jitter=False` waits the bound
    itself, for a schedule that must be exact."""
    bound = min(cap, base * 2 ** (attempt - 1))
    return timedelta(seconds=random.uniform(0, bound) if jitter else bound)
