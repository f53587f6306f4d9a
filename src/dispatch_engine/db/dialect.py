"""What differs between PostgreSQL and SQLite, asked by what it means for the caller.

Code outside ``db/`` asks "one writer at a time?" or "skip a duplicate insert" here
instead of comparing dialect names, so each difference is written down once.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Insert, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

__all__ = [
    "advisory_xact_locks",
    "has_row_locks",
    "insert_ignoring_conflicts",
    "is_single_writer",
]


def _is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def is_single_writer(engine: AsyncEngine) -> bool:
    """SQLite: one write transaction at a time (BEGIN IMMEDIATE) and no row locks, so work
    runs one round at a time and a row lock can never stand for a claim."""
    return engine.dialect.name == "sqlite"


def has_row_locks(session: AsyncSession) -> bool:
    """PostgreSQL: `FOR UPDATE SKIP LOCKED` locks rows, so a transaction's locks can be the
    claim itself (the fast paths) and raw asyncpg statements may be used."""
    return _is_postgresql(session)


def insert_ignoring_conflicts(session: AsyncSession, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` into ``table`` in the session's dialect."""
    if _is_postgresql(session):
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


async def advisory_xact_locks(session: AsyncSession, keys: Iterable[int]) -> None:
    """Transaction-scoped advisory locks on signed 64-bit ``keys``, taken in one global
    order (no deadlock between two callers). PostgreSQL only: SQLite's write transactions
    never overlap, so there nothing is taken and ``keys`` is not even read."""
    if not _is_postgresql(session):
        return
    ids = sorted(set(keys))
    await session.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(k))"
            " FROM (SELECT unnest(CAST(:ids AS bigint[])) AS k ORDER BY 1) AS ordered_keys"
        ),
        {"ids": ids},
    )
