"""Moving a column of any table to a new key, in keyset batches: which stored values are
under an old key (``"<key id>:…"``), a page of them after a primary key, how many remain, and
the conditional rewrite (see `db/conditional.py`). Key rotation drives it per column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.conditional import update_unchanged

# Rows of any width, read by position or by column name.
Rows = list[Row[*tuple[Any, ...]]]


def under_old_key(column: Any, current_key_id: str) -> ColumnElement[bool]:
    """The value's key id prefix is not the current one (substr: ids may hold LIKE's `_`)."""
    prefix = f"{current_key_id}:"
    return func.substr(column, 1, len(prefix)) != prefix


async def old_key_page(
    session: AsyncSession,
    table: Table,
    key: str,
    column: str,
    current_key_id: str,
    *,
    after: Any,
    limit: int,
) -> Rows:
    """Up to `limit` (key, value) rows of `table` whose `column` is set and under an old key,
    by `key`, after `after` (None: from the start)."""
    key_column, value_column = table.c[key], table.c[column]
    query = select(key_column, value_column).where(
        value_column.is_not(None), under_old_key(value_column, current_key_id)
    )
    if after is not None:
        query = query.where(key_column > after)
    return list((await session.execute(query.order_by(key_column).limit(limit))).all())


async def count_under_old_key(
    session: AsyncSession, table: Table, column: str, current_key_id: str
) -> int:
    """How many of `table`'s `column` values are set and under an old key."""
    value_column = table.c[column]
    query = select(func.count()).where(
        value_column.is_not(None), under_old_key(value_column, current_key_id)
    )
    return int((await session.execute(query)).scalar_one())


async def write_unchanged(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    new: Sequence[str],
    old: Sequence[str],
    dry_run: bool,
) -> int:
    """:func:`update_unchanged`, or with ``dry_run`` nothing written: the rows changed (or
    that would be)."""
    if dry_run:
        return len(rows)
    return len(await update_unchanged(session, table, key, rows, new=new, old=old))
