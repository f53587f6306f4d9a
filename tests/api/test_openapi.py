"""The OpenAPI document is the EM team's contract: every operation is described, secured
unless public, and documents its errors as the problem+json bodies it really sends; the
docs pages work offline; docs/openapi.json is what the code serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from dispatch_engine.api.app import ROUTE_MODULES, create_app, openapi_document
from dispatch_engine.api.openapi import render
from dispatch_engine.context import AppContext
from tests.conftest import bearer, create_policy, new_key, setup_account, templates_for

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/status-feed"}
PROBLEM = "application/problem+json"
PROBLEM_SCHEMAS = {"Problem", "ContactFileProblem", "ResendRefusedProblem"}
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return openapi_document()


@pytest.fixture
def app(context: AppContext) -> FastAPI:
    return create_app(context.settings, context=context)


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method in METHODS
    ]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = spec["components"]["schemas"][name]
    return resolved


def _generated_summaries() -> dict[tuple[str, str], str]:
    """What FastAPI would have called each operation (its function name, titled)."""
    names = {}
    for module in ROUTE_MODULES:
        for route in module.router.routes:
            if isinstance(route, APIRoute):
                for method in route.methods:
                    names[(route.path, method.lower())] = route.name.replace("_", " ").title()
    names[("/metrics", "get")] = "Metrics"
    return names


def test_every_operation_has_a_human_summary_and_a_description(spec: dict[str, Any]) -> None:
    generated = _generated_summaries()
    operations = _operations(spec)
    assert len(operations) >= 65
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        summary = operation.get("summary", "")
        assert summary, where
        assert summary != generated.get((path, method)), f"{where}: summary is the function name"
        assert len(operation.get("description", "")) >= 40, f"{where}: no real description"
        assert operation.get("tags"), where


def test_tags_are_declared_with_descriptions(spec: dict[str, Any]) -> None:
    declared = {tag["name"]: tag.get("description", "") for tag in spec["tags"]}
    used = {tag for _, _, operation in _operations(spec) for tag in operation["tags"]}
    assert used == set(declared)
    assert all(declared.values()), declared


def test_security_is_declared_once_and_on_every_operation_that_needs_a_key(
    spec: dict[str, Any],
) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert list(schemes) == ["apiKey"]
    assert schemes["apiKey"]["type"] == "http"
    assert schemes["apiKey"]["scheme"] == "bearer"
    for path, method, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert "authorization" not in names, f"{where}: Authorization as a plain header"
        if path in PUBLIC:
            assert "security" not in operation, f"{where} is public: no lock"
            assert "401" not in operation["responses"], where
        else:
            assert operation.get("security") == [{"apiKey": []}], where
            assert "401" in operation["responses"], where


def test_errors_are_problems_and_fastapi_validation_errors_are_gone(
    spec: dict[str, Any],
) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert "HTTPValidationError" not in render(spec)
    for path, method, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        for status, response in responses.items():
            if not status.startswith("4"):
                continue
            content = response.get("content", {})
            assert list(content) == [PROBLEM], f"{where} {status}: {list(content)}"
            ref = content[PROBLEM]["schema"]["$ref"]
            assert ref.removeprefix("#/components/schemas/") in PROBLEM_SCHEMAS, where
            assert response.get("description"), where
        takes_body = "requestBody" in operation
        has_parameters = bool(operation.get("parameters"))
        if takes_body:
            assert {"413", "415", "422"} <= set(responses), f"{where}: body errors"
        else:
            assert "413" not in responses and "415" not in responses, where
        if has_parameters or takes_body:
            assert "422" in responses, f"{where}: parameters can be refused"
        if "412" in responses:
            assert any(p["name"] == "if-match" for p in operation["parameters"]), where
        assert "428" not in responses, f"{where}: nothing answers 428"


def test_every_request_body_has_an_example(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        body = operation.get("requestBody")
        if body is None:
            continue
        for media, content in body["content"].items():
            where = f"{method.upper()} {path} {media}"
            if "example" in content or content.get("examples"):
                continue
            schema = content["schema"]
            options = schema.get("anyOf") or schema.get("oneOf") or [schema]
            options = [o for o in options if o.get("type") != "null"]
            assert options, where
            for option in options:
                assert _resolve(spec, option).get("examples"), f"{where}: no example"


def test_request_body_examples_are_valid_requests(spec: dict[str, Any]) -> None:
    """Each JSON example passes its own schema (the models' validators run in the API tests
    that post the README's values)."""
    for path, method, operation in _operations(spec):
        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            continue
        schema = content["schema"]
        options = [o for o in (schema.get("anyOf") or [schema]) if o.get("type") != "null"]
        examples = [content["example"]] if "example" in content else []
        examples += [e["value"] for e in content.get("examples", {}).values()]
        for option in options:
            examples += _resolve(spec, option).get("examples", [])
        validator = jsonschema.Draft202012Validator({**schema, "components": spec["components"]})
        for example in examples:
            errors = list(validator.iter_errors(example))
            assert not errors, f"{method.upper()} {path}: {errors[0].message}"


def test_committed_document_is_current(spec: dict[str, Any]) -> None:
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    assert committed == render(spec), (
        "docs/openapi.json is out of date: run `.venv/bin/python scripts/openapi.py` "
        "and commit the file"
    )


async def test_docs_pages_load_their_assets_from_the_service(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for page in ("/docs", "/redoc"):
            response = await http.get(page)
            assert response.status_code == 200, page
            assert response.headers["content-type"].startswith("text/html")
            html = response.text
            assert "/openapi.json" in html
            assets = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert assets, page
            for url in assets:
                assert url.startswith("/docs/assets/"), f"{page} loads {url} from elsewhere"
                asset = await http.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 1000, url
            assert "cdn." not in html and "googleapis" not in html, page
        js = await http.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in js.headers["content-type"]
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "dispatch-engine"


# ---- the documented errors are the ones the API sends ---------------------------------


def _check_problem(
    spec: dict[str, Any], method: str, path: str, response: httpx.Response
) -> dict[str, Any]:
    where = f"{method} {path} → {response.status_code}"
    documented = spec["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in documented, f"{where}: status not documented"
    assert response.headers["content-type"].startswith(PROBLEM), where
    schema = documented[str(response.status_code)]["content"][PROBLEM]["schema"]
    body: dict[str, Any] = response.json()
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(body)
    members = set(_resolve(spec, schema)["properties"])
    assert set(body) <= members, f"{where}: undocumented members {set(body) - members}"
    return body


async def test_real_problem_bodies_match_the_documented_ones(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str], spec: dict[str, Any]
) -> None:
    await setup_account(client, admin)
    policy = await create_policy(client, admin)
    dispatch = await client.post(
        "/v1/accounts/acme/dispatches",
        headers=admin,
        json={
            "questionnaire_id": "q",
            "policy_id": policy["id"],
            "token_validity": "P30D",
            "message_templates": templates_for(policy),
        },
    )
    operator = bearer(await new_key(context, "operator"))
    account = "/v1/accounts/{account_id}"
    dispatches = account + "/dispatches"
    checks: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/v1/api-keys", "/v1/api-keys", {}),  # 401
        ("POST", "/v1/api-keys", "/v1/api-keys", {"headers": operator, "json": {}}),  # 403
        ("GET", account, "/v1/accounts/nope", {"headers": admin}),  # 404
        (
            "POST",
            "/v1/accounts",
            "/v1/accounts",
            {"headers": admin, "json": {"id": "acme", "name": "Acme"}},
        ),  # 409
        (
            "PATCH",
            account,
            "/v1/accounts/acme",
            {"headers": {**admin, "If-Match": '"999"'}, "json": {"name": "x"}},
        ),  # 412 with current_version
        (
            "POST",
            "/v1/accounts",
            "/v1/accounts",
            {"headers": {**admin, "Content-Type": "text/plain"}, "content": b"id=acme"},
        ),  # 415
        ("POST", dispatches, "/v1/accounts/acme/dispatches", {"headers": admin, "json": {}}),
        (
            "POST",
            dispatches,
            "/v1/accounts/acme/dispatches",
            {
                "headers": admin,
                "json": {
                    "questionnaire_id": "q",
                    "policy_id": policy["id"],
                    "token_validity": "P1D",
                    "message_templates": templates_for(policy),
                },
            },
        ),  # 422 token-validity-too-short, with its members
        ("GET", account, "/v1/accounts/acme%00", {"headers": admin}),  # 422 hostile text
        (
            "POST",
            dispatches + "/{dispatch_id}/contacts",
            f"/v1/accounts/acme/dispatches/{dispatch.json()['id']}/contacts",
            {
                "headers": {**admin, "Content-Type": "text/csv"},
                "content": b"email,external_id\nann@example.com,c-1\nb\xff@example.com,c-2\n",
            },
        ),  # 422 contact-file-unreadable, with the batch
        (
            "POST",
            "/v1/admin/pauses",
            "/v1/admin/pauses",
            {"headers": admin, "json": {"scope": "channel", "target": "sms"}},
        ),
        (
            "POST",
            "/v1/admin/pauses",
            "/v1/admin/pauses",
            {"headers": admin, "json": {"scope": "channel", "target": "sms"}},
        ),  # 409 already-paused, with `pause`
    ]
    seen: dict[int, int] = {}
    for method, template, url, kwargs in checks:
        response = await client.request(method, url, **kwargs)
        if response.status_code < 400:
            continue
        body = _check_problem(spec, method, template, response)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        if response.status_code == 401:
            assert response.headers["www-authenticate"] == "Bearer"
        if response.status_code == 412:
            assert body["current_version"] >= 1
    assert dispatch.status_code == 201, dispatch.text
    assert set(seen) == {401, 403, 404, 409, 412, 415, 422}, seen
    assert seen[422] == 4 and seen[409] == 2, seen
