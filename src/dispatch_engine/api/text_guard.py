"""Hostile text is refused once, for every request, before any route runs.

Every string the API takes arrives in a header value, the path, the query string or a JSON
body. This pure ASGI middleware reads all four the way the app will and answers 422
(problem+json naming the field) when one holds a NUL, a lone surrogate or bytes that are not
UTF-8 (security/text.py says why). JSON object keys count too: they reach `jsonb` columns
and the audit log. Doing it here rather than in each schema means no route, model or query
parameter has to remember it, and an endpoint added later is covered the day it exists.

The contact upload's body is not read here: it streams, and a row with such text is
rejected as a row (ingest/rows.py), not the file. Other JSON bodies are buffered (FastAPI
reads them whole anyway) up to MAX_BODY_BYTES; a larger one is a 413.

Like an unparsable JSON body, a refusal is only explained to a caller with a valid key when
the route needs one; anyone else gets the 401 first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatch_engine.api.content_type import BODY_METHODS, OWN_MEDIA_TYPES
from dispatch_engine.api.deps import current_principal
from dispatch_engine.api.problems import domain_problem
from dispatch_engine.errors import DomainError, PayloadTooLarge, ValidationFailed
from dispatch_engine.security.text import hostile_text_reason

#: Far above any sensible request (100,000 sending ids are ~3.5 MB); contact files have
#: their own limit (routes/contacts.py).
MAX_BODY_BYTES = 16 * 1024 * 1024
NOT_UTF8 = "is not valid UTF-8"
_PATH_PARAM = re.compile(r"^\{(\w+)(?::\w+)?\}$")


class TextGuard:
    """Pure ASGI middleware: checks headers, path, query and JSON body, then hands the
    (buffered) body on to the app unchanged. `routes` are the API's routes, matched only to
    word a refusal (the path parameter's name; whether the route needs a key)."""

    def __init__(self, app: ASGIApp, routes: Sequence[APIRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            _check_headers(scope)
            _check_path(scope, lambda index: self._path_param(scope, index))
            _check_query(scope)
            if scope["method"] in BODY_METHODS and not OWN_MEDIA_TYPES.match(scope["path"]):
                body = await _read_body(scope, receive)
                if body is None:
                    return  # the client went away
                _check_json(body)
                receive = _replay(body, receive)
        except DomainError as refused:
            answer = await self._key_first(scope, refused)
            await domain_problem(answer, scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _route(self, scope: Scope) -> APIRoute | None:
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return partial

    def _path_param(self, scope: Scope, index: int) -> str:
        """The name of the path parameter at segment `index` (`account_id`), else `path`."""
        route = self._route(scope)
        segments = route.path.split("/") if route else []
        found = _PATH_PARAM.match(segments[index]) if index < len(segments) else None
        return found.group(1) if found else "path"

    async def _key_first(self, scope: Scope, refused: DomainError) -> DomainError:
        """The 401 instead of the refusal when the route needs a key and the caller has none."""
        if not _needs_key(self._route(scope)):
            return refused
        authorization = dict(scope["headers"]).get(b"authorization")
        try:
            await current_principal(
                scope["app"].state.context,
                authorization.decode("latin-1") if authorization is not None else None,
            )
        except DomainError as unauthenticated:
            return unauthenticated
        return refused


def _needs_key(route: APIRoute | None) -> bool:
    pending = [route.dependant] if route else []
    while pending:
        dependant = pending.pop()
        if dependant.call is current_principal:
            return True
        pending.extend(dependant.dependencies)
    return False


def _check_headers(scope: Scope) -> None:
    for name, value in scope["headers"]:
        reason = hostile_text_reason(value.decode("latin-1"))
        if reason:
            field = "-".join(word.capitalize() for word in name.decode("latin-1").split("-"))
            raise ValidationFailed(field, reason)


def _decoded(raw: bytes) -> str | None:
    """Percent-decoded UTF-8 text, or None when the bytes are not UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _check_path(scope: Scope, param_name: Callable[[int], str]) -> None:
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        segments = [_decoded(s) for s in raw.split(b"?", 1)[0].split(b"/")]
    else:
        segments = list(scope["path"].split("/"))
    for index, text in enumerate(segments):
        reason = NOT_UTF8 if text is None else hostile_text_reason(text)
        if reason:
            raise ValidationFailed(param_name(index), reason)


def _check_query(scope: Scope) -> None:
    for part in scope["query_string"].split(b"&"):
        raw_name, _, raw_value = part.replace(b"+", b" ").partition(b"=")
        name = _decoded(raw_name)
        reason = NOT_UTF8 if name is None else hostile_text_reason(name)
        if reason:
            raise ValidationFailed("query", f"a parameter name {reason}")
        assert name is not None
        value = _decoded(raw_value)
        reason = NOT_UTF8 if value is None else hostile_text_reason(value)
        if reason:
            raise ValidationFailed(name, reason)


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole body (None if the client disconnected); 413 as soon as it is too large."""
    declared = dict(scope["headers"]).get(b"content-length", b"")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(MAX_BODY_BYTES)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(MAX_BODY_BYTES)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check_json(body: bytes) -> None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("body", NOT_UTF8) from None
    if "\\u" not in text:
        return  # NUL and surrogates can only be \u escapes: raw control characters are not JSON
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return  # not JSON: FastAPI refuses it as it always has
    pending: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while pending:
        value, path = pending.pop()
        field = ".".join(path) or "body"
        if isinstance(value, str):
            reason = hostile_text_reason(value)
            if reason:
                raise ValidationFailed(field, reason)
        elif isinstance(value, list):
            pending.extend((item, (*path, str(i))) for i, item in enumerate(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                reason = hostile_text_reason(key)
                if reason:
                    raise ValidationFailed(field, f"a key {reason}")
                pending.append((item, (*path, key)))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body read here, then whatever comes next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
