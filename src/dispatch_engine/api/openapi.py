"""The OpenAPI document (EM's contract) and the docs pages that show it, offline.

Routes declare their errors with `problems(…)` and their words in the decorator; this module
holds what is common: the tags, the API's description, the problem responses, the final
touches to FastAPI's document (errors as `application/problem+json`, no FastAPI validation
schema) and Swagger UI / ReDoc served from the `fastapi-offline` package's files instead of a
CDN. `scripts/openapi.py` writes the document to docs/openapi.json.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from dispatch_engine.api.paging import NEXT_PAGE_HEADERS
from dispatch_engine.api.problems import PROBLEM_MEDIA_TYPE
from dispatch_engine.incidents.resends import ResendItem
from dispatch_engine.schemas.problems import ContactFileProblem, Problem

DOCS_ASSETS = "/docs/assets"
ACCOUNT_PATH = "/v1/accounts/{account_id}"


def doc(text: str) -> str:
    """A triple-quoted description, indentation removed (as FastAPI does for docstrings)."""
    return inspect.cleandoc(text)


DESCRIPTION = doc(
    """
    Decides **whether** and **when** each survey invitation may go out under a Delivery
    Policy, and pushes the ones that may onto the account's queue (Amazon SQS, Azure Service
    Bus, or the embedded `local` queue), where a message vendor picks them up.

    **Who calls.** The EM backend (configuration, contact files, events) with `backend`
    keys, which may be limited to one account; operators (pauses, incidents, resends, audit)
    with `operator` keys; `admin` keys may do everything and alone manage API keys. Message
    vendors only consume the queue (the `local` queue through its two endpoints).

    **Authentication.** Every operation but the service probes and the public status feed
    needs `Authorization: Bearer <key>` (in Swagger UI: *Authorize*). No valid key: 401. A
    role that may not: 403. An account the key may not see: 404, so account ids do not leak.

    **Errors** are RFC 9457 `application/problem+json` documents (schema `Problem`): a stable
    `type` (`urn:dispatch-engine:problem:<slug>`), `title`, `status`, `detail`, `instance`,
    and `errors[]` naming each refused field with its reason. A request whose headers, path,
    query or JSON body holds a NUL, a lone surrogate or bytes that are not UTF-8 is refused
    with 422 before any route runs. JSON bodies must be `application/json` (415) and at most
    16 MiB (413).

    **Conventions.** Times are RFC 3339 with an offset (naive times are refused) and are
    returned in UTC. Durations are ISO 8601 (`PT1H`, `P3D`; no years or months). Accounts,
    policies, dispatches and incidents carry a `version`, returned as the `ETag` header;
    an edit that sends `If-Match` is refused with 412 when the resource changed since.
    Created resources answer 201 with a `Location` header. Paged lists return
    `next_cursor`: pass it back as `cursor` for the next page.
    """
)

TAGS: list[dict[str, Any]] = [
    {
        "name": "service",
        "description": "Liveness, readiness and Prometheus metrics, for the platform. No key.",
    },
    {
        "name": "api keys",
        "description": "Admin keys only: create (the key is shown once), list and revoke keys.",
    },
    {
        "name": "accounts",
        "description": "Tenants, with the ids EM chooses, and the people to reach during "
        "incidents (owner, admins, decision maker).",
    },
    {
        "name": "queue integration",
        "description": "Where an account's messages go: `sqs`, `azure_service_bus` or the "
        "embedded `local` queue. An account needs one before its first policy.",
    },
    {
        "name": "policies",
        "description": "Delivery Policies: the lineup of messages, fatigue rules, business "
        "hours and DND webhooks; the sandbox policy; previews of when messages would go out.",
    },
    {
        "name": "dispatches",
        "description": "One questionnaire sent through one policy, with a message template "
        "per lineup message; pause, resume and counts by outcome.",
    },
    {
        "name": "contacts",
        "description": "Contact files posted to a dispatch (CSV streamed, or JSON), and the "
        "batch each becomes: status, counts and rejected rows.",
    },
    {
        "name": "invites",
        "description": "Invites and their messages: state, times, and the rule and reason of "
        "every message not sent.",
    },
    {
        "name": "events",
        "description": "Responses and unsubscribes from EM; operators' re-subscribes.",
    },
    {
        "name": "local queue",
        "description": "The embedded `local` queue over HTTP, the vendor's side: receive "
        "messages with a visibility timeout, then acknowledge them.",
    },
    {
        "name": "pauses",
        "description": "Operators hold a dispatch, a policy, an account or a whole channel "
        "for every account (held messages are not lost), with an incident reference.",
    },
    {
        "name": "audit",
        "description": "Every change and operator action: who, what, when, before and after.",
    },
    {
        "name": "incidents",
        "description": "Incident operations: states and clocks, status notices and the public "
        "status feed, impacted sendings, approvals and resends, the communication log and "
        "post-mortems. Operators and admins only (the status feed is public).",
    },
    {
        "name": "notification webhooks",
        "description": "Where incident notifications go (e.g. a Slack incoming webhook).",
    },
]


class ResendRefusedProblem(Problem):
    """`resend-refused` (409): every sending was refused, nothing was sent. `errors[]` gives
    each sending's reason (`sendings.<n>`); the usual resend answer comes with it."""

    dry_run: bool
    threshold_minutes: int
    results: list[ResendItem]
    counts: dict[str, int]


_DEFAULTS: dict[int, str] = {
    401: "No valid API key: `Authorization: Bearer <key>` is missing, malformed, unknown or "
    "revoked (`unauthenticated`). Said before anything about the request itself.",
    403: "The key's role may not do this (`forbidden`).",
    404: "Something the request names does not exist (`not-found`).",
    409: "The request conflicts with the current state; `type` says how.",
    412: "`If-Match` names a version that is no longer current (`precondition-failed`); "
    "`current_version` is the current one. Nothing was changed.",
    413: "The body is larger than 16 MiB (`payload-too-large`). Nothing was stored.",
    415: "The body is not `application/json` (`unsupported-media-type`).",
    422: "A parameter, header or body field is invalid (`validation-error`, unless said "
    "otherwise): `errors` names each with the reason. Nothing was changed.",
}

_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}


def problems(
    *statuses: int,
    notes: Mapping[int, str] | None = None,
    models: Mapping[int, type[Problem]] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation can really give, for the decorator's `responses`:
    each documented as `application/problem+json` (`Problem`, or the model given), with the
    common description and the operation's own `notes`."""
    notes = notes or {}
    models = models or {}
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = _DEFAULTS[status] + (f" {notes[status]}" if status in notes else "")
        response: dict[str, Any] = {
            "model": models.get(status, Problem),
            "description": description,
        }
        if status == 401:
            response["headers"] = _WWW_AUTHENTICATE
        responses[status] = response
    return responses


#: The errors of every operation that takes a JSON body, on top of its own.
BODY = (413, 415, 422)

_PROBLEM_MODELS: tuple[type[BaseModel], ...] = (Problem, ContactFileProblem, ResendRefusedProblem)
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def finish(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, made true to the answers:

    - error bodies are `application/problem+json` (FastAPI files a response model under the
      route's own media type, `application/json`);
    - account-scoped operations say that another account's id answers 404;
    - FastAPI's `HTTPValidationError` (a 422 body this API never sends) is gone: every 422
      is declared by its route as a problem;
    - every paged list (it takes a `cursor`) names the headers of its next page.
    """
    problem_refs = {f"#/components/schemas/{model.__name__}" for model in _PROBLEM_MODELS}
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            if any(p.get("name") == "cursor" for p in operation.get("parameters", [])):
                ok = operation.get("responses", {}).get("200")
                if ok is not None:
                    ok.setdefault("headers", {}).update(NEXT_PAGE_HEADERS)
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                json_body = content.get("application/json")
                if (
                    status[:1] in ("4", "5")
                    and json_body is not None
                    and json_body.get("schema", {}).get("$ref") in problem_refs
                ):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
                if status == "404" and path.startswith(ACCOUNT_PATH):
                    response["description"] += (
                        " An account the key may not see answers 404 too, so ids do not leak."
                    )
                schema = content.get("application/json", {}).get("schema", {})
                if schema.get("$ref", "").endswith("/HTTPValidationError"):
                    raise ValueError(f"{path}: declare its 422 with problems(...)")
    schemas = spec.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    return spec


class DispatchAPI(FastAPI):
    """FastAPI with the finished OpenAPI document (see `finish`)."""

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = finish(super().openapi())
        return self.openapi_schema


def render(spec: dict[str, Any]) -> str:
    """The document as docs/openapi.json holds it: sorted keys, two-space indents."""
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def install_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` with their scripts and styles served from the
    `fastapi-offline` package, so the pages work without the internet."""
    app.mount(
        DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} — API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} — API",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
