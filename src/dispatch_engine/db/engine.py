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

    def connect_args(self, *, pgbouncer: bool = False) -> dict[str, Any]:
        """asyncpg's arguments: the limits as startup parameters of the session.

        Through PgBouncer only `application_name` is sent: PgBouncer refuses any other
        startup parameter ("unsupported startup parameter"), or drops it silently when
        listed in its `ignore_startup_parameters`, and a session setting would not follow
        the transactions onto the server connections they run on anyway. The timeouts are
        then set per transaction (`transaction_settings_sql`); the TCP keepalives are
        PgBouncer's own to configure (its client is us, PostgreSQL's is PgBouncer).
        """
        server_settings = {"application_name": self.application_name[:63]}
        if not pgbouncer:
            keepalive_idle = max(1, min(30, self.idle_in_transaction_seconds // 3))
            server_settings.update(
                {
                    "idle_in_transaction_session_timeout": str(
                        self.idle_in_transaction_seconds * 1000
                    ),
                    "statement_timeout": str(self.statement_seconds * 1000),
                    "tcp_keepalives_idle": str(keepalive_idle),
                    "tcp_keepalives_interval": str(max(1, keepalive_idle // 3)),
                    "tcp_keepalives_count": "3",
                }
            )
        # Client side: an answer that never comes (partition) ends the statement.
        command_timeout = self.statement_seconds + 30 if self.statement_seconds else None
        return {"server_settings": server_settings, "command_timeout": command_timeout}

    def transaction_settings_sql(self) -> str:
        """The two server timeouts for the current transaction only (`SET LOCAL`), as one
        statement: what a transaction-mode pooler leaves us instead of session settings."""
        return (
            "SELECT set_config('statement_timeout', "
            f"'{int(self.statement_seconds) * 1000}', true), "
            "set_config('idle_in_transaction_session_timeout', "
            f"'{int(self.idle_in_transaction_seconds) * 1000}', true)"
        )


def build_engine(
    url: str,
    *,
    pool_size: int = 10,
    echo: bool = False,
    limits: SessionLimits | None = None,
    pgbouncer: bool = False,
) -> AsyncEngine:
    """Create the engine; SQLite gets WAL, a busy timeout, foreign keys and BEGIN IMMEDIATE,
    PostgreSQL the session `limits`. Bound parameters never appear in errors or logs
    (`hide_parameters`): they carry addresses and other personal data.

    `pgbouncer`: the URL points at PgBouncer in transaction mode (DISPATCH_DB_PGBOUNCER),
    where consecutive transactions of one connection run on different server connections.
    asyncpg's statement cache is switched off, which makes it use the unnamed prepared
    statement and send its Parse again with every execution (asyncpg does this on purpose
    when the cache is off): nothing named is left on a server connection for another
    client to collide with ("prepared statement … already exists") or for this one to miss
    ("… does not exist"). Unique statement names (the `prepared_statement_name_func`
    recipe) are not enough: a statement outside a transaction is prepared on one server
    connection and may run on another, and every name stays on its server connection until
    PgBouncer closes it. SQLAlchemy's own cache of the statements' descriptions stays on:
    it holds no server state and spares a round trip per statement. The session `limits`
    are set at the start of every transaction instead of at connect (see
    `SessionLimits.connect_args`).
    """
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, poolclass=NullPool, hide_parameters=True)
        _install_sqlite_pragmas(engine)
        return engine
    connect_args = limits.connect_args(pgbouncer=pgbouncer) if limits else {}
    if pgbouncer:
        connect_args["statement_cache_size"] = 0
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args=connect_args,
    )
    if pgbouncer and limits:
        _install_transaction_limits(engine, limits)
    return engine


def _install_transaction_limits(engine: AsyncEngine, limits: SessionLimits) -> None:
    """Through PgBouncer: the session limits as SET LOCAL at the start of each transaction
    (one more statement per transaction; `allow_idle_in_transaction` still overrides)."""
    statement = limits.transaction_settings_sql()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # no transaction for a local setting to live in
        connection.exec_driver_sql(statement)


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
