"""The one place where errors become RFC 9457 problem+json responses.

Unhandled errors are caught by :class:`UnhandledErrors` inside the app: Starlette's own
last-resort handler answers and then re-raises, and the server logs the re-raised error with
its full message (for a database error: the SQL parameters, personal data included).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatch_engine.errors import DomainError, FieldError
from dispatch_engine.observability.safe_errors import describe_exception

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:dispatch-engine:problem:"

log = structlog.get_logger(__name__)


def problem_response(
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    instance: str,
    errors: list[FieldError] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors:
        body["errors"] = [{"field": e.field, "reason": e.reason} for e in errors]
        body["field"] = errors[0].field
        body["reason"] = errors[0].reason
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def domain_problem(exc: DomainError, instance: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        instance=instance,
        errors=exc.errors,
        extra=exc.extra,
        headers=headers,
    )


def _location(loc: tuple[Any, ...], error_type: str = "", ctx: dict[str, Any] | None = None) -> str:
    """The field an error is about, dotted (`lineup.0.delay`), without the `body.` prefix.

    A model-level check names its field in the error's context (`{"field": "channel"}`); a
    missing union tag is about the tag itself (`kind`).
    """
    if error_type == "json_invalid":
        return "body"  # the location is a byte offset, not a field
    if loc[:1] == ("header",) and len(loc) == 2:  # as the client wrote it: Idempotency-Key
        return "-".join(word.capitalize() for word in str(loc[1]).split("-"))
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    ctx = ctx or {}
    if isinstance(ctx.get("field"), str):
        parts.append(ctx["field"])
    elif error_type == "union_tag_not_found" and isinstance(ctx.get("discriminator"), str):
        parts.append(ctx["discriminator"].strip("'"))
    return ".".join(parts) or str(loc[0] if loc else "request")


def _reason(error: dict[str, Any]) -> str:
    if error.get("type") == "union_tag_not_found":
        return "Field required"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            # FastAPI decodes a JSON body before any dependency runs, so a caller without a
            # valid key would be told about its body instead of 401 (every route that takes
            # a body needs a key).
            from dispatch_engine.api.deps import current_principal, get_context

            try:
                await current_principal(get_context(request), request.headers.get("authorization"))
            except DomainError as refused:
                return await _domain(request, refused)
        errors = [
            FieldError(_location(tuple(e["loc"]), str(e.get("type", "")), e.get("ctx")), _reason(e))
            for e in exc.errors()
        ]
        return problem_response(
            status=422,
            slug="validation-error",
            title="Request validation failed",
            detail="; ".join(f"{e.field}: {e.reason}" for e in errors),
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 415: "unsupported-media-type"}
        return problem_response(
            status=exc.status_code,
            slug=slug.get(exc.status_code, "http-error"),
            title=str(exc.detail) if exc.status_code < 500 else "Server error",
            detail=str(exc.detail),
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Only errors raised outside UnhandledErrors (in an outer middleware) get here.
        _log_unhandled(exc, request.method, request.url.path)
        return internal_error_response(exc, request.url.path)

    app.add_middleware(UnhandledErrors)  # the innermost middleware: added before the others


def _log_unhandled(exc: BaseException, method: str, path: str) -> None:
    log.error("unhandled_error", method=method, path=path, **describe_exception(exc))


def internal_error_response(exc: BaseException, path: str) -> JSONResponse:
    """The 500 answer: the error's type and the request id, never its message."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    error_type = type(exc).__name__
    return problem_response(
        status=500,
        slug="internal-error",
        title="Internal server error",
        detail=f"an unexpected error occurred ({error_type}); it has been logged",
        instance=path,
        extra={"error_type": error_type, "request_id": request_id},
    )


class UnhandledErrors:
    """Turns an error no handler took into a 500 problem and one log line without values,
    and does not re-raise it (the server would log it again, message and all)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            path = str(scope.get("path", ""))
            _log_unhandled(exc, str(scope.get("method", "")), path)
            if not started:  # otherwise the client sees the answer cut short
                await internal_error_response(exc, path)(scope, receive, send)
