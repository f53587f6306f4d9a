"""Alembic: one head, up/down/up on both databases, and the models agree with the migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from dispatch_engine.db.engine import build_engine
from dispatch_engine.db.migrate import (
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from dispatch_engine.models import Base
from tests.conftest import drop_pg_database, fresh_database_url


@pytest.fixture
def empty_url(db_kind: str, tmp_path: Path) -> Iterator[str]:
    url, pg_name = fresh_database_url(db_kind, tmp_path)
    yield url
    if pg_name:
        drop_pg_database(pg_name)


def _inspect(url: str) -> tuple[set[str], str | None, list[Any]]:
    """(tables, current revision, autogenerate diff against the models)."""

    def run(connection: Connection) -> tuple[set[str], list[Any]]:
        tables = set(inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return tables, compare_metadata(context, Base.metadata)

    async def go() -> tuple[set[str], str | None, list[Any]]:
        engine = build_engine(url)
        try:
            async with engine.connect() as connection:
                tables, diff = await connection.run_sync(run)
            revision = await current_revision(engine)
        finally:
            await engine.dispose()
        return tables, revision, diff

    return asyncio.run(go())


def test_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///:memory:"))
    heads = script.get_heads()
    assert len(heads) == 1, heads
    assert head_revision("sqlite+aiosqlite:///:memory:") == heads[0]
    # Every revision is reachable from the head down to a single base.
    assert len(script.get_bases()) == 1
    walked = list(script.walk_revisions())
    assert walked[-1].down_revision is None


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    head = head_revision(empty_url)
    tables, revision, _ = _inspect(empty_url)
    assert tables == set()
    assert revision is None

    upgrade(empty_url)
    tables, revision, _ = _inspect(empty_url)
    assert revision == head
    model_tables = set(Base.metadata.tables)
    assert model_tables <= tables

    downgrade(empty_url, "base")
    tables, revision, _ = _inspect(empty_url)
    assert tables <= {"alembic_version"}, tables
    assert revision is None

    upgrade(empty_url)
    tables, revision, _ = _inspect(empty_url)
    assert revision == head
    assert model_tables <= tables

    upgrade(empty_url)  # already at head: a no-op
    assert _inspect(empty_url)[1] == head


def test_models_and_migrations_agree(empty_url: str) -> None:
    upgrade(empty_url)
    _, _, diff = _inspect(empty_url)
    assert diff == [], "models and migrations differ (write a migration):\n" + "\n".join(
        map(str, diff)
    )


def _reloptions(url: str) -> dict[str, list[str]]:
    async def go() -> dict[str, list[str]]:
        engine = build_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.exec_driver_sql(
                    "SELECT relname, reloptions FROM pg_class "
                    "WHERE relname IN ('messages', 'outbox', 'invites')"
                )
                return {name: sorted(options or []) for name, options in rows}
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_queue_tables_are_vacuumed_and_analyzed_sooner(empty_url: str, db_kind: str) -> None:
    if db_kind != "postgresql":
        pytest.skip("autovacuum storage parameters are PostgreSQL's")
    upgrade(empty_url)
    assert _reloptions(empty_url) == {
        "messages": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_scale_factor=0.02",
        ],
        "outbox": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_scale_factor=0.01",
        ],
        "invites": ["autovacuum_analyze_scale_factor=0.02"],
    }
    downgrade(empty_url, "0005")
    assert _reloptions(empty_url) == {"messages": [], "outbox": [], "invites": []}
