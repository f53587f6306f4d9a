"""415 for request bodies that are not JSON, on every endpoint that takes JSON.

FastAPI (strict about content types) would not read such a body and answer 422 "Input
should be a valid dictionary", which hides the real mistake: a form post, a CSV sent to the
wrong place, a client that forgot the header. The contacts upload takes `text/csv` too and
checks its own media type.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatch_engine.api.problems import problem_response
from dispatch_engine.errors import FieldError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OWN_MEDIA_TYPES = re.compile(r"^/v1/accounts/[^/]+/dispatches/[^/]+/contacts/?$")


def is_json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonBodiesOnly:
    """Pure ASGI middleware: refuses before the body is read or anything is authorised."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type")
        has_body = headers.get(b"content-length", b"0").strip() not in (b"", b"0") or (
            b"transfer-encoding" in headers
        )
        if (
            not has_body
            or (content_type is not None and is_json_media_type(content_type.decode("latin-1")))
            or OWN_MEDIA_TYPES.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        response = problem_response(
            status=415,
            slug="unsupported-media-type",
            title="Unsupported media type",
            detail="send the request body as application/json",
            instance=scope["path"],
            errors=[FieldError("Content-Type", "must be application/json")],
        )
        await response(scope, receive, send)


def wants_csv(request: Request, format: str | None) -> bool:
    """CSV when `format` says so, else when the Accept header prefers it."""
    if format is not None:
        return format == "csv"
    return prefers_csv(request.headers.get("accept", ""))


def prefers_csv(accept: str) -> bool:
    """Content negotiation between JSON (the default) and CSV: CSV when the Accept header
    rates `text/csv` above every JSON type it lists (q-values, RFC 9110 §12.5.1), or as high
    and listed first."""
    ranked: dict[str, tuple[float, int]] = {}  # media type → (quality, -position)
    for position, item in enumerate(accept.lower().split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranked[media] = max(ranked.get(media, (0.0, 0)), (quality, -position))
    csv = ranked.get("text/csv", (0.0, 0))
    json = max(ranked.get("application/json", (0.0, 0)), ranked.get("application/*", (0.0, 0)))
    return csv[0] > 0 and csv > json
