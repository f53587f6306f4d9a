"""Engine and session factory built from the database URL (no import-time state)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


@dataclass(frozen=True)
class SessionLimits:
    """How long PostgreSQL lets one of our sessions hold what it took (PostgreSQL only).

    A worker frozen (SIGSTOP, a long GC pause, a VM stall) or cut off by the network while
    its transaction is open keeps its row locks, the claim of the fast path, until the
    server ends the session. Nothing does by default: an idle transaction lives forever
    and the kernel's TCP keepalive notices a vanished client after about two hours. These
    settings bound it: the server ends a transaction idle for longer than the claim lease
    and a statement running longer than `statement_seconds`, and probes a silent client
    every few seconds; the client gives up on an unanswered statement too.
    """

    idle_in_transaction_seconds: int
    statement_seconds: int  # 0: no limit
    application_name: str = "dispatch-engine"

    def connect_args(self) -> dict[str, Any]:
        keepalive_idle = max(1, min(30, self.idle_in_transaction_seconds // 3))
        server_settings = {
            "application_name": self.application_name[:63],
            "idle_in_transaction_session_timeout": str(self.idle_in_transaction_seconds * 1000),
            "statement_timeout": str(self.statement_seconds * 1000),
            "tcp_keepalives_idle": str(keepalive_idle),
            "tcp_keepalives_interval": str(max(1, keepalive_idle // 3)),
            "tcp_keepalives_count": "3",
        }
        # Client side: an answer that never comes (partition) ends the statement.
        command_timeout = self.statement_seconds + 30 if self.statement_seconds else None
        return {"server_settings": server_settings, "command_timeout": command_timeout}


def build_engine(
    url: str,
    *,
    pool_size: int = 10,
    echo: bool = False,
    limits: SessionLimits | None = None,
) -> AsyncEngine:
    """Create the engine; SQLite gets WAL, a busy timeout, foreign keys and BEGIN IMMEDIATE,
    PostgreSQL the session `limits`. Bound parameters never appear in errors or logs
    (`hide_parameters`): they carry addresses and other personal data."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, poolclass=NullPool, hide_parameters=True)
        _install_sqlite_pragmas(engine)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args=limits.connect_args() if limits else {},
    )


def _install_sqlite_pragmas(engine: AsyncEngine) -> None:
    """One writer at a time without 'database is locked': every transaction is IMMEDIATE.

    pysqlite's own transaction handling is switched off (isolation_level None) so the
    BEGIN we emit is the one that runs, as the SQLAlchemy docs recommend.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def allow_idle_in_transaction(session: AsyncSession, seconds: float) -> None:
    """Let this transaction (only) stay idle up to `seconds` before PostgreSQL ends it:
    for a claim held across a call elsewhere (the relay's push), whose bound is its own
    lease rather than the session's."""
    await session.execute(
        text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
        {"ms": str(int(seconds * 1000))},
    )
