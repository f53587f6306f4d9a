"""Statements sent straight to asyncpg (COPY, the relay's due-row select) belong to the
session's transaction even when they are its first statement."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from dispatch_engine.context import AppContext
from dispatch_engine.db.bulk import asyncpg_connection, insert_rows
from dispatch_engine.models import Unsubscribe
from dispatch_engine.models.base import table_of

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


class Abort(Exception):
    pass


async def _unsubscribes(context: AppContext) -> int:
    async with context.sessions() as session:
        query = select(func.count()).select_from(Unsubscribe)
        return int((await session.execute(query)).scalar_one())


async def test_a_copy_as_first_statement_rolls_back_with_its_transaction(
    context: AppContext,
) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("COPY and raw asyncpg statements are PostgreSQL paths")
    before = await _unsubscribes(context)
    row = {
        "account_id": "acme",
        "channel": "email",
        "address_hash": "k1:copied",
        "created_at": NOW,
        "source": "test",
    }
    with pytest.raises(Abort):
        async with context.sessions() as session, session.begin():
            await insert_rows(session, table_of(Unsubscribe), [row])
            raise Abort
    assert await _unsubscribes(context) == before


async def test_a_raw_statement_as_first_statement_runs_inside_the_transaction(
    context: AppContext,
) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("raw asyncpg statements are a PostgreSQL path")
    async with context.sessions() as session, session.begin():
        driver = await asyncpg_connection(session)
        assert driver.is_in_transaction()
        first = await driver.fetchval("SELECT txid_current()")
        second = (await session.execute(select(func.txid_current()))).scalar_one()
        assert first == second
