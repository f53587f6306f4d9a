"""The `dispatch-engine` command line (typer)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Annotated

import typer
from rich.console import Console

from dispatch_engine.cli.checks import (
    describe_store,
    require_free_port,
    require_store,
    say,
)
from dispatch_engine.cli.incidents import build_incidents_app
from dispatch_engine.settings import Settings

app = typer.Typer(help="dispatch-engine: survey invitation dispatch.", no_args_is_help=True)
apikey_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
queue_app = typer.Typer(help="The embedded local queue.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption and HMAC key rings (rotation).", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
app.add_typer(queue_app, name="queue")
app.add_typer(keys_app, name="keys")
err = Console(stderr=True)


def _settings() -> Settings:
    """The settings, with the store they name said on stderr (every command calls this)."""
    try:
        settings = Settings()
    except Exception as exc:  # show the settings problem, not a traceback
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    from dispatch_engine.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    say(f"store: {describe_store(settings.effective_database_url)}")
    return settings


def _existing_store_settings() -> Settings:
    """For commands that use a store but do not create one: a missing SQLite file is an
    error (it would be an empty store the server never sees); an existing one is brought
    to the current schema."""
    settings = _settings()
    require_store(settings)
    _migrate(settings)
    return settings


app.add_typer(build_incidents_app(_existing_store_settings), name="incidents")


def _migrate(settings: Settings) -> None:
    """Bring the store to the current schema (a no-op when it is), quietly: commands that
    read an existing store work on one an older version made."""
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # before it logs its imports
    from dispatch_engine.db.migrate import upgrade

    upgrade(settings.effective_database_url)


@app.command()
def migrate() -> None:
    """Apply database migrations up to head (creates the SQLite store if it is missing)."""
    settings = _settings()
    _migrate(settings)
    say("migrations at head")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: DISPATCH_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: DISPATCH_PORT")] = None,
) -> None:
    """All in one process: migrations, the API and the worker (the embedded default);
    creates the SQLite store if it is missing."""
    import uvicorn

    from dispatch_engine.api.app import create_app

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    require_free_port(host, port, "DISPATCH_PORT (or --port)")
    _migrate(settings)
    # Plain lines: a console would wrap them mid-URL.
    say(f"dispatch-engine on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    create_key = "dispatch-engine apikey create --role admin"
    say(f"first admin key: {_same_store_prefix(settings)}{create_key}")
    app = create_app(settings, with_worker=settings.run_scheduler)
    # log_config=None: uvicorn's records go through our handler, whose tracebacks carry no
    # values (uvicorn's own handler would print an error's full message).
    uvicorn.run(app, host=host, port=port, log_level="warning", log_config=None)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: DISPATCH_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: DISPATCH_PORT")] = None,
    workers: Annotated[int, typer.Option(help="Web worker processes")] = 1,
) -> None:
    """The HTTP API only (never the scheduler); run `migrate` first. With several workers set
    PROMETHEUS_MULTIPROC_DIR so /metrics covers all of them."""
    import uvicorn

    settings = _settings()
    require_store(settings)
    host = host or settings.host
    port = port or settings.port
    require_free_port(host, port, "DISPATCH_PORT (or --port)")
    uvicorn.run(
        "dispatch_engine.api.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=None,  # as in `serve`: tracebacks through our handler, without values
        timeout_graceful_shutdown=30,
    )


@app.command()
def worker(
    grace: Annotated[
        float, typer.Option(help="Seconds to finish in-flight work on SIGTERM")
    ] = 10.0,
) -> None:
    """The scheduler, claim loop and outbox relay (no HTTP); run `migrate` first."""
    import signal

    from dispatch_engine.context import build_context
    from dispatch_engine.scheduler.worker import Worker

    settings = _settings()
    require_store(settings)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        require_free_port(settings.host, settings.metrics_port, "DISPATCH_METRICS_PORT")
        start_http_server(settings.metrics_port, addr=settings.host)

    async def _run() -> None:
        context = build_context(settings)
        runner = Worker(context)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner.start()
        err.print("dispatch-engine worker running (SIGTERM to stop)")
        await stop.wait()
        await runner.shutdown(grace)
        await context.aclose()

    asyncio.run(_run())


@queue_app.command("tail")
def queue_tail(
    account: Annotated[str, typer.Option(help="Account whose local queue to follow")],
    ack: Annotated[bool, typer.Option(help="Consume (delete) messages once printed")] = False,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new messages")] = True,
    interval: Annotated[float, typer.Option(help="Seconds between polls")] = 1.0,
) -> None:
    """Print the `local` queue's messages as JSON lines as they arrive."""
    from dispatch_engine.context import build_context
    from dispatch_engine.errors import DomainError
    from dispatch_engine.queues.local import read_after
    from dispatch_engine.services.integrations import require_local_queue

    settings = _existing_store_settings()

    async def _tail() -> None:
        context = build_context(settings)
        last = 0
        try:
            async with context.sessions() as session, session.begin():
                await require_local_queue(session, account)
            while True:
                async with context.sessions() as session, session.begin():
                    rows = await read_after(session, account, last, consume=ack)
                    for row_id, body in rows:
                        sys.stdout.write(body.decode() + "\n")
                        last = row_id
                    sys.stdout.flush()
                if not follow and not rows:
                    return
                if not rows:
                    await asyncio.sleep(interval)
        finally:
            await context.aclose()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_tail())
    except DomainError as exc:
        err.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None


@apikey_app.command("create")
def apikey_create(
    role: Annotated[str, typer.Option(help="backend, operator or admin")],
    account: Annotated[str | None, typer.Option(help="Limit a backend key to one account")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key")] = None,
) -> None:
    """Create a key and print it alone on stdout (KEY=$(dispatch-engine apikey create …)).
    The store must exist (`migrate` or `serve` creates it): a key in a store the server does
    not use would be refused."""
    from dispatch_engine.context import build_context
    from dispatch_engine.errors import DomainError
    from dispatch_engine.services.api_keys import create_api_key, key_snapshot
    from dispatch_engine.store.audit import record_audit

    settings = _existing_store_settings()

    async def _create() -> str:
        context = build_context(settings)
        try:
            async with context.sessions() as session, session.begin():
                now = context.clock.now()
                key, full = await create_api_key(
                    session, role=role, account_id=account, name=name, now=now
                )
                record_audit(
                    session,
                    at=now,
                    key_id=None,
                    role="cli",
                    action="api_key.create",
                    target_type="api_key",
                    target_id=key.id,
                    after=key_snapshot(key),
                )
                return full
        finally:
            await context.aclose()

    try:
        key = asyncio.run(_create())
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from None
    sys.stdout.write(key + "\n")


@keys_app.command("reencrypt")
def keys_reencrypt(
    batch_size: Annotated[
        int, typer.Option(min=1, max=50_000, help="Rows per batch (one short transaction each)")
    ] = 1000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would change; write nothing")
    ] = False,
) -> None:
    """Move stored values to the first (current) key of each ring: re-encrypt every
    encrypted column, rehash invites that still hold contact data (with their fatigue
    ledger rows, locks and unsubscribes). Run after prepending a key and restarting every
    process; idempotent, resumable and safe while the service runs. Exit code 1 when some
    value could not be moved (see `skipped`)."""
    from rich.table import Table

    from dispatch_engine.context import build_context
    from dispatch_engine.services.key_rotation import RotationReport, rotate_keys

    settings = _settings()
    require_store(settings)

    async def _rotate() -> RotationReport:
        context = build_context(settings)
        try:
            return await rotate_keys(
                context.engine,
                context.cipher,
                context.hasher,
                batch_size=batch_size,
                dry_run=dry_run,
            )
        finally:
            await context.aclose()

    report = asyncio.run(_rotate())
    out = Console()
    title = (
        f"keys reencrypt{' (dry run)' if dry_run else ''}: "
        f"encryption key {report.encryption_key_id}, hmac key {report.hmac_key_id}"
    )
    table = Table(title=title)
    table.add_column("column")
    table.add_column("ring")
    table.add_column("would change" if dry_run else "changed", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("remaining", justify="right")
    for column in report.columns:
        remaining = "-" if column.remaining is None else str(column.remaining)
        table.add_row(column.name, column.ring, str(column.changed), str(column.skipped), remaining)
    out.print(table)
    out.print(
        f"total: changed {report.changed}, skipped {report.skipped}, "
        f"encrypted values under old keys {report.encryption_remaining}",
        soft_wrap=True,
    )
    if report.encryption_remaining == 0 and not dry_run:
        out.print(
            "No encrypted value is left under an old key: old keys may now leave "
            "DISPATCH_ENCRYPTION_KEYS. Keep old DISPATCH_HMAC_KEYS (see docs/operations.md).",
            soft_wrap=True,
        )
    if report.skipped:
        raise typer.Exit(1)


def _same_store_prefix(settings: Settings) -> str:
    """What to put before a command so that, run from any directory, it uses this store."""
    if settings.database_url:
        return "(with the same DISPATCH_DATABASE_URL) "  # not repeated: it may hold secrets
    return f"DISPATCH_DATA_DIR={settings.data_dir.expanduser().resolve()} "


def main() -> None:
    app()
