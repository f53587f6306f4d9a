"""Conditional bulk updates: many rows in one statement, each written only where it still
holds the value the caller read, so a concurrent writer wins and nothing is overwritten
blindly. Key rotation and ingest's carry-forward move hashes and tokens with them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import asyncpg_connection, dialect_of, pg_array_type

__all__ = ["relabel", "update_unchanged"]


async def _pg_conditional_update(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    new: Sequence[str],
    old: Sequence[str],
) -> list[Any]:
    """`UPDATE … FROM unnest(arrays)` with the old-value checks; returns updated keys."""
    names = ["k", *(f"new_{c}" for c in new), *(f"old_{c}" for c in old)]
    columns = [key, *new, *old]
    arrays = ", ".join(
        f"${i}::{pg_array_type(table.c[c])}[]" for i, c in enumerate(columns, start=1)
    )
    assignments = ", ".join(f'"{c}" = v."new_{c}"' for c in new)
    conditions = " AND ".join(
        [f't."{key}" = v."k"', *(f't."{c}" IS NOT DISTINCT FROM v."old_{c}"' for c in old)]
    )
    aliases = ", ".join(f'"{n}"' for n in names)
    # Identifiers come from the table's own metadata; values travel as parameters.
    sql = (
        f'UPDATE "{table.name}" AS t SET {assignments} '  # noqa: S608
        f"FROM unnest({arrays}) AS v({aliases}) WHERE {conditions} "
        f'RETURNING v."k"'
    )
    driver = await asyncpg_connection(session)
    records = await driver.fetch(sql, *[[row[n] for row in rows] for n in names])
    return [record[0] for record in records]


async def update_unchanged(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    new: Sequence[str],
    old: Sequence[str],
) -> set[Any]:
    """One UPDATE for many rows of a unique ``key``: ``SET c = row["new_c"]`` where the row's
    ``old`` columns still hold ``row["old_c"]`` (NULL-safe). Rows changed meanwhile by
    another writer are left alone. Returns the keys of the rows updated."""
    if not rows:
        return set()
    if dialect_of(session) == "postgresql":
        return set(await _pg_conditional_update(session, table, key, rows, new, old))
    statement = (
        table.update()
        .where(
            table.c[key] == bindparam("b_k"),
            *(table.c[c].is_not_distinct_from(bindparam(f"b_old_{c}")) for c in old),
        )
        .values({c: bindparam(f"b_new_{c}") for c in new})
    )
    params = [{f"b_{name}": value for name, value in row.items()} for row in rows]
    result = await session.execute(statement, params)
    keys = {row["k"] for row in rows}
    if int(result.rowcount or 0) == len(rows):  # type: ignore[attr-defined]
        return keys
    # Some lost to a concurrent writer: the ones holding our new values are ours.
    wanted = {row["k"]: tuple(row[f"new_{c}"] for c in new) for row in rows}
    current = await session.execute(
        select(table.c[key], *(table.c[c] for c in new)).where(table.c[key].in_(list(keys)))
    )
    return {k for k, *values in current.all() if tuple(values) == wanted[k]}


async def relabel(
    session: AsyncSession, table: Table, column: str, pairs: Mapping[str, str]
) -> int:
    """``UPDATE table SET column = new WHERE column = old`` for every pair, one statement;
    returns the number of rows changed."""
    if not pairs:
        return 0
    rows = [{"k": old, f"new_{column}": new} for old, new in pairs.items()]
    if dialect_of(session) == "postgresql":
        return len(await _pg_conditional_update(session, table, column, rows, [column], []))
    statement = (
        table.update()
        .where(table.c[column] == bindparam("b_old"))
        .values({column: bindparam("b_new")})
    )
    result = await session.execute(
        statement, [{"b_old": old, "b_new": new} for old, new in pairs.items()]
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
