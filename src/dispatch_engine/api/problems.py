"""The one place where errors become RFC 9457 problem+json responses."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatch_engine.errors import DomainError, FieldError

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
        log.error("unhandled_error", error_type=type(exc).__name__, path=request.url.path)
        return problem_response(
            status=500,
            slug="internal-error",
            title="Internal server error",
            detail="an unexpected error occurred; it has been logged",
            instance=request.url.path,
        )
