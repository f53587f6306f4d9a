"""`dispatch-engine incidents list|show|impacted`: the API's service code, from a shell.

Heavy imports happen inside the commands so `dispatch-engine --help` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, get_args

import typer

from dispatch_engine.rules.incident_states import State
from dispatch_engine.settings import Settings


def _one_of(allowed: tuple[str, ...]) -> Callable[[str | None], str | None]:
    """An option callback: a value outside `allowed` is a usage error (exit 2), not an
    empty answer."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"must be one of {', '.join(allowed)}")
        return value

    return check


def build_incidents_app(load_settings: Callable[[], Settings]) -> typer.Typer:
    """The `incidents` sub-app; `load_settings` reports configuration errors its own way."""
    app = typer.Typer(help="Incident operations (read-only).", no_args_is_help=True)

    def run(work: Callable[[Any], Any]) -> Any:
        from dispatch_engine.context import build_context
        from dispatch_engine.errors import DomainError

        settings = load_settings()  # outside the loop: it may apply migrations

        async def go() -> Any:
            context = build_context(settings)
            try:
                return await work(context)
            finally:
                await context.aclose()

        try:
            return asyncio.run(go())
        except DomainError as exc:
            typer.echo(f"error: {exc.detail}", err=True)
            raise typer.Exit(2) from None

    @app.command("list")
    def list_incidents(
        state: Annotated[
            str | None, typer.Option(help="Only this state", callback=_one_of(get_args(State)))
        ] = None,
        open_only: Annotated[
            bool, typer.Option("--open", help="Only incidents not closed")
        ] = False,
        overdue: Annotated[bool, typer.Option(help="Only incidents with an overdue clock")] = False,
        limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 100,
    ) -> None:
        """One line per incident: id, severity, state, overdue clocks, title."""
        from dispatch_engine.incidents import service

        filters = service.IncidentFilters(
            state=state, open=True if open_only else None, overdue=True if overdue else None
        )

        async def work(context: Any) -> None:
            async with context.sessions() as session, session.begin():
                items, _ = await service.list_incidents(
                    session, filters, context.clock.now(), limit=limit, cursor=None
                )
            for item in items:
                late = ",".join(c.name for c in item.clocks if c.overdue) or "-"
                sys.stdout.write(
                    f"{item.id}\t{item.severity or '--'}\t{item.state}\t{late}\t{item.title}\n"
                )

        run(work)

    @app.command("show")
    def show(incident_id: str) -> None:
        """The incident as JSON (as `GET /v1/incidents/{id}` returns it)."""
        from dispatch_engine.incidents import service

        async def work(context: Any) -> None:
            async with context.sessions() as session, session.begin():
                incident = await service.get_incident(session, incident_id)
                out = await service.incident_out(session, incident, context.clock.now())
            sys.stdout.write(json.dumps(out.model_dump(mode="json"), indent=2) + "\n")

        run(work)

    @app.command("impacted")
    def impacted(
        incident_id: str,
        csv: Annotated[bool, typer.Option("--csv", help="CSV instead of JSON lines")] = False,
        account: Annotated[str | None, typer.Option(help="Only this account")] = None,
        channel: Annotated[
            str | None, typer.Option(help="email or sms", callback=_one_of(("email", "sms")))
        ] = None,
    ) -> None:
        """The incident's failed and delayed sendings (JSON lines per account group, or CSV)."""
        from dispatch_engine.incidents import service
        from dispatch_engine.incidents.impacted import (
            ImpactedQuery,
            impacted_page,
            stream_csv,
            time_range,
        )

        async def work(context: Any) -> None:
            async with context.sessions() as session, session.begin():
                incident = await service.get_incident(session, incident_id)
                start, end = time_range(incident, context.clock.now())
            query = ImpactedQuery(incident.id, start, end, account, channel)
            if csv:
                async for chunk in stream_csv(context.sessions, query):
                    sys.stdout.write(chunk)
                return
            cursor: str | None = None
            while True:
                async with context.sessions() as session, session.begin():
                    page = await impacted_page(session, query, limit=1000, cursor=cursor)
                for group in page.accounts:
                    sys.stdout.write(group.model_dump_json() + "\n")
                cursor = page.next_cursor
                if cursor is None:
                    return

        run(work)

    return app
