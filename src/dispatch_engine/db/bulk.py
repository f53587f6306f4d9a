"""Set-based helpers that keep hot paths to a few round trips.

On PostgreSQL, `IN (…)` with thousands of values renders a new statement each time
(parsed and planned again); `= ANY($1)` with one array parameter is a single prepared
statement. Bulk inserts use COPY there. SQLite gets the portable forms.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter
from typing import Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    String,
    Table,
    any_,
    bindparam,
    func,
    literal_column,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

# Values per `IN (…)` list or multi-row INSERT (SQLite allows 32,766 parameters).
CHUNK = 1_000


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """``values`` in slices of ``size``, for statements bounded in parameters."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def asyncpg_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session's transaction (PostgreSQL only), for COPY
    and for hot statements whose rows are not worth SQLAlchemy's per-row processing.

    SQLAlchemy's asyncpg adapter sends BEGIN only with its first statement: a statement
    sent straight to asyncpg before that would run outside the transaction (autocommit,
    row locks released at once). So a session that has not spoken yet says `SELECT 1` first.
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, asyncpg.Connection)
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


def member_of(
    session: AsyncSession,
    column: InstrumentedAttribute[Any] | ColumnElement[Any],
    values: Collection[Any],
) -> ColumnElement[bool]:
    """`column IN values`, as `= ANY(array)` on PostgreSQL (one cached statement)."""
    if dialect_of(session) == "postgresql":
        element = BigInteger() if isinstance(column.type, Integer) else String()
        return column == any_(bindparam(None, list(values), type_=ARRAY(element)))
    return column.in_(list(values))


async def existing_values(
    session: AsyncSession,
    column: InstrumentedAttribute[Any],
    values: Collection[str],
    *conditions: ColumnElement[bool],
) -> set[str]:
    """Which of `values` exist in `column` (under `conditions`), probing the index per value.

    On PostgreSQL each value of `unnest($1)` probes the index through a `LATERAL … LIMIT 1`
    subquery. A plain `EXISTS` lets the planner pick a hash join over every row that meets
    `conditions` (a whole dispatch, say), and with statistics taken while a big upload was
    young it did: each 2,000-value probe then scanned the growing table, ten times slower
    by the end of 200,000 rows. A lateral limit can only be a per-value lookup.
    """
    if not values:
        return set()
    if dialect_of(session) == "postgresql":
        probe = (
            func.unnest(bindparam(None, list(values), type_=ARRAY(String)))
            .table_valued("value")
            .render_derived(name="probe")
        )
        hit = (
            select(literal_column("1"))
            .where(column == probe.c.value, *conditions)
            .limit(1)
            .lateral("hit")
        )
        query = select(probe.c.value).select_from(probe.join(hit, true()))
    else:
        query = select(column).where(column.in_(list(values)), *conditions)
    return {v for v in (await session.execute(query)).scalars() if v is not None}


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many rows in the caller's transaction: COPY on PostgreSQL, executemany else."""
    if not rows:
        return
    if dialect_of(session) != "postgresql":
        await session.execute(table.insert(), list(rows))
        return
    columns = list(rows[0])
    record = itemgetter(*columns)  # one C call per row (a 1-tuple needs wrapping)
    records = (
        [record(row) for row in rows] if len(columns) > 1 else [(record(row),) for row in rows]
    )
    await insert_records(session, table, columns, records)


async def insert_records(
    session: AsyncSession, table: Table, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
) -> None:
    """`insert_rows` for rows already built as tuples in `columns` order (a hot path's rows:
    no dict per row): COPY on PostgreSQL, executemany else."""
    if not records:
        return
    if dialect_of(session) != "postgresql":
        await session.execute(table.insert(), [dict(zip(columns, r, strict=True)) for r in records])
        return
    driver = await asyncpg_connection(session)
    try:
        await driver.copy_records_to_table(table.name, records=records, columns=list(columns))
    except asyncpg.IntegrityConstraintViolationError as exc:
        # Same exception types as the ORM paths, so callers retry races in one place.
        raise IntegrityError(f"COPY {table.name}", None, exc) from exc
    except asyncpg.TransactionRollbackError as exc:  # deadlock, serialization failure
        raise OperationalError(f"COPY {table.name}", None, exc) from exc


def pg_array_type(column: Any) -> str:
    """The PostgreSQL array element type for a column, for `unnest($n::type[])`."""
    from sqlalchemy import BigInteger, Boolean, DateTime, Integer, LargeBinary

    kind = column.type
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, BigInteger):
        return "bigint"
    if isinstance(kind, Integer):
        return "integer"
    if isinstance(kind, DateTime) or (
        getattr(kind, "impl", None) is not None and isinstance(kind.impl, DateTime)
    ):
        return "timestamptz"
    if isinstance(kind, LargeBinary):
        return "bytea"
    return "text"


async def update_rows(
    session: AsyncSession, table: Table, key: str, rows: Sequence[dict[str, Any]]
) -> None:
    """Update many rows by key, each with its own values, in one statement on PostgreSQL
    (`UPDATE … FROM unnest(arrays)`); executemany elsewhere. All rows carry the same keys."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != key]
    if dialect_of(session) != "postgresql":
        statement = (
            table.update()
            .where(table.c[key] == bindparam("_key"))
            .values({c: bindparam(f"_v_{c}") for c in columns})
        )
        await session.execute(
            statement,
            [{"_key": row[key], **{f"_v_{c}": row[c] for c in columns}} for row in rows],
        )
        return
    values = {name: [row[name] for row in rows] for name in (key, *columns)}
    # A column with one value for every row is sent once, not as an array: asyncpg checks
    # each array element in Python, and a batch's write-back has many such columns.
    same = {c for c in columns if values[c].count(values[c][0]) == len(rows)}
    varying = [key, *(c for c in columns if c not in same)]
    params: list[Any] = [values[name] for name in varying]
    arrays = [f"${i}::{pg_array_type(table.c[name])}[]" for i, name in enumerate(varying, start=1)]
    assignments = []
    for column in columns:
        if column in same:
            params.append(values[column][0])
            assignments.append(f'"{column}" = ${len(params)}::{pg_array_type(table.c[column])}')
        else:
            assignments.append(f'"{column}" = v."{column}"')
    aliases = ", ".join(f'"{n}"' for n in varying)
    # Identifiers come from the table's own metadata, values travel as parameters.
    sql = (
        f'UPDATE "{table.name}" AS t SET {", ".join(assignments)} '  # noqa: S608
        f"FROM unnest({', '.join(arrays)}) AS v({aliases}) "
        f'WHERE t."{key}" = v."{key}"'
    )
    driver = await asyncpg_connection(session)
    await driver.execute(sql, *params)
