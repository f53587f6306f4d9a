"""Structured JSON logs (structlog, on stderr) with request, account and dispatch ids — never PII.

Log events carry ids and reasons only: no addresses, tokens, secrets or message bodies.
Exceptions are logged by type and location only (observability/safe_errors.py): their
messages can quote SQL parameters or rows. The request log line records the route's path
without its query string (a token lookup puts the token in the query).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from starlette.requests import Request
from starlette.responses import Response

from dispatch_engine.observability.safe_errors import SafeExceptionFormatter, render_exc_info

REQUEST_ID_HEADER = "X-Request-ID"
QUIET_LIBRARIES = (
    "aiosqlite",
    "sqlalchemy",
    "asyncpg",
    "httpx",
    "httpcore",
    "aiohttp",
    "botocore",
    "aiobotocore",
    "aioboto3",
    "urllib3",
    "azure",
    "uvicorn.access",
    "apscheduler",
    "multipart",
)


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """JSON lines on stderr; stdlib logging (uvicorn, apscheduler) goes the same way."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            render_exc_info,  # not format_exc_info: messages can carry values
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.setLevel(level.upper())
    for noisy in QUIET_LIBRARIES:  # their debug lines carry SQL parameters and payloads
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not any(isinstance(h, _CurrentStderr) for h in root.handlers):
        handler = _CurrentStderr()
        # uvicorn's "Exception in ASGI application" and APScheduler's job errors come with a
        # traceback whose last line would quote SQL parameters: rendered without values.
        handler.setFormatter(SafeExceptionFormatter("%(message)s"))
        root.addHandler(handler)


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """Logs go to stderr, so a command's stdout stays its result (`KEY=$(… apikey create)`);
    resolved at each call because test capture swaps sys.stderr."""
    return structlog.PrintLogger(sys.stderr)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (test capture swaps it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


async def request_context(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Bind a request id (taken from X-Request-ID when sane) for every log line of the request."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = (
        given
        if given.isascii() and 0 < len(given) <= 64 and given.isprintable()
        else (uuid.uuid4().hex)
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    response = await call_next(request)
    params = request.path_params
    structlog.get_logger("dispatch_engine.http").info(
        "request",
        method=request.method,
        path=request.url.path,
        status=response.status_code,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        account=params.get("account_id"),
        dispatch=params.get("dispatch_id"),
    )
    response.headers[REQUEST_ID_HEADER] = request_id
    return response
