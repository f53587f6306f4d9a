"""The application factory: everything is built from Settings, nothing at import time."""

from __future__ import annotations

import base64
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute

from dispatch_engine import __version__
from dispatch_engine.api.content_type import JsonBodiesOnly
from dispatch_engine.api.openapi import DESCRIPTION, TAGS, DispatchAPI, install_docs
from dispatch_engine.api.problems import install_problem_handlers
from dispatch_engine.api.routes import (
    accounts,
    admin_pauses,
    api_keys,
    audit,
    contacts,
    dispatches,
    events,
    health,
    incidents,
    invites,
    local_queue,
    notification_webhooks,
    policies,
    preview,
)
from dispatch_engine.api.text_guard import TextGuard
from dispatch_engine.clock import Clock
from dispatch_engine.context import AppContext, build_context
from dispatch_engine.observability.logging import configure_logging, request_context
from dispatch_engine.observability.metrics import metrics_payload
from dispatch_engine.runtime import tune_gc
from dispatch_engine.settings import Settings

ROUTE_MODULES = (
    health,
    api_keys,
    accounts,
    policies,
    preview,
    dispatches,
    contacts,
    invites,
    events,
    local_queue,
    admin_pauses,
    audit,
    incidents,
    notification_webhooks,
)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    context: AppContext | None = None,
    with_worker: bool = False,
) -> FastAPI:
    """Build the API; `with_worker` also runs the scheduler in this process (`serve`).
    Tests pass their own context (clock, engine) in."""
    owned = context is None
    ctx = context or build_context(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owned:  # a service process of its own (tests bring their context)
            tune_gc()
        worker = None
        if with_worker:
            from dispatch_engine.scheduler.worker import Worker

            worker = Worker(ctx)
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await worker.shutdown()
            if owned:
                await ctx.aclose()

    app = DispatchAPI(
        title="dispatch-engine",
        version=__version__,
        summary="Survey invitations sent under Delivery Policies, onto the account's queue.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url=None,  # install_docs: the same pages, without a CDN
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    app.state.context = ctx
    install_problem_handlers(app)
    # Inside JsonBodiesOnly, so only JSON bodies get this far.
    routes = [r for m in ROUTE_MODULES for r in m.router.routes if isinstance(r, APIRoute)]
    app.add_middleware(TextGuard, routes=routes)
    app.add_middleware(JsonBodiesOnly)
    app.middleware("http")(request_context)

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics",
        description="This process's metrics in the Prometheus text format, for scraping: "
        "message outcomes, claim lag, pipeline latency, queue pushes, DND calls, outbox "
        "depth, incident clocks. No personal data; every label has a bounded set of values. "
        "No key needed. A separate `worker` process serves its own counters on "
        "`DISPATCH_METRICS_PORT` (docs/operations.md).",
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        """Prometheus metrics (no PII, bounded labels)."""
        payload, media_type = metrics_payload()
        return Response(payload, media_type=media_type)

    for module in ROUTE_MODULES:
        app.include_router(module.router)
    install_docs(app)
    return app


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory` with several workers: each process builds its own app."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings, with_worker=False)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document, from an app built on throwaway settings (nothing is connected
    to or written): what `scripts/openapi.py` writes to docs/openapi.json."""
    with tempfile.TemporaryDirectory(prefix="openapi-") as tmp:
        ring = f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}"
        settings = Settings(
            _env_file=None,
            env="dev",
            data_dir=Path(tmp),
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'openapi.db'}",
            encryption_keys=ring,
            hmac_keys=ring,
        )
        return create_app(settings).openapi()
