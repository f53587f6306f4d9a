"""The `dispatch-engine` command line (typer)."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console

from dispatch_engine.settings import Settings

app = typer.Typer(help="dispatch-engine: survey invitation dispatch.", no_args_is_help=True)
apikey_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # show the settings problem, not a traceback
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _migrate(settings: Settings) -> None:
    from dispatch_engine.db.migrate import upgrade

    upgrade(settings.effective_database_url)


@app.command()
def migrate() -> None:
    """Apply database migrations up to head."""
    settings = _settings()
    _migrate(settings)
    err.print("migrations at head")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: DISPATCH_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: DISPATCH_PORT")] = None,
) -> None:
    """All in one process: migrations, the API and the worker (the embedded default)."""
    import uvicorn

    from dispatch_engine.api.app import create_app

    settings = _settings()
    _migrate(settings)
    host = host or settings.host
    port = port or settings.port
    err.print(f"dispatch-engine on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    err.print("first admin key: dispatch-engine apikey create --role admin")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: DISPATCH_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: DISPATCH_PORT")] = None,
) -> None:
    """The HTTP API only (no scheduler); run `migrate` first."""
    import uvicorn

    from dispatch_engine.api.app import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level="warning",
    )


@apikey_app.command("create")
def apikey_create(
    role: Annotated[str, typer.Option(help="backend, operator or admin")],
    account: Annotated[str | None, typer.Option(help="Limit a backend key to one account")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key")] = None,
) -> None:
    """Create a key and print it alone on stdout (KEY=$(dispatch-engine apikey create …))."""
    from dispatch_engine.context import build_context
    from dispatch_engine.errors import DomainError
    from dispatch_engine.services.api_keys import create_api_key, key_snapshot
    from dispatch_engine.store.audit import record_audit

    settings = _settings()
    _migrate(settings)

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
