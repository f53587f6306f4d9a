"""Planner statistics after bulk loads (PostgreSQL).

The claim query walks a partial index in due order. With statistics taken before a large
upload (or none: autovacuum looks at a table about once a minute) the planner expects a
handful of due messages and picks a bitmap scan plus a sort of every due message instead:
~300 ms a claim round at 70,000 due messages, against under 1 ms. PostgreSQL's own advice
after a bulk load is to ANALYZE; an upload does so as it grows.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

#: The tables an upload grows, whose statistics the claim and ingest queries plan with.
UPLOAD_TABLES = ("messages", "invites")


async def analyze(engine: AsyncEngine, tables: tuple[str, ...]) -> None:
    """ANALYZE `tables` on PostgreSQL (a no-op elsewhere); a failure is logged, not raised:
    stale statistics make queries slower, never wrong."""
    if engine.dialect.name != "postgresql":
        return
    try:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(f"ANALYZE {', '.join(tables)}")
    except Exception as exc:  # statistics are an optimisation: never fail the upload
        log.warning("analyze_failed", error_type=type(exc).__name__)


# Running ANALYZE tasks, held so they finish after the upload that started them answered.
_RUNNING: set[asyncio.Task[None]] = set()


class GrowthAnalyzer:
    """ANALYZE the upload's tables when its accepted rows reach `first`, 2×, 4×, … (a few
    times even for millions of rows), in the background: the upload never waits for it."""

    def __init__(self, engine: AsyncEngine, first: int) -> None:
        self.engine = engine
        self.next_at = max(1, first)
        self.running: asyncio.Task[None] | None = None

    def grew_to(self, rows: int) -> None:
        if rows < self.next_at or (self.running is not None and not self.running.done()):
            return
        while self.next_at <= rows:
            self.next_at *= 2
        self.running = asyncio.create_task(analyze(self.engine, UPLOAD_TABLES))
        _RUNNING.add(self.running)
        self.running.add_done_callback(_RUNNING.discard)
