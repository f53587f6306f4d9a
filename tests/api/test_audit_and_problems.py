"""The audit log (R-INC-7: who, what, when, before/after) and the problem+json error shape."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import Account, ApiKey, AuditRecord, Policy, QueueIntegration
from tests.conftest import T0, bearer, new_key, setup_account

PROBLEM = "application/problem+json"
TYPE_PREFIX = "urn:dispatch-engine:problem:"


async def _key_id(context: AppContext, key: str) -> str:
    prefix = key.split("_")[1]
    async with context.sessions() as session:
        return (
            await session.execute(select(ApiKey.id).where(ApiKey.prefix == prefix))
        ).scalar_one()


async def _audit(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    response = await client.get("/v1/admin/audit", headers=headers, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _audit_count(context: AppContext) -> int:
    async with context.sessions() as session:
        return (await session.execute(select(func.count()).select_from(AuditRecord))).scalar_one()


def _at(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["at"])


# --- the audit log ------------------------------------------------------------------------


async def test_every_mutating_call_is_audited(
    client: httpx.AsyncClient, context: AppContext, clock: FrozenClock
) -> None:
    admin_key = await new_key(context, "admin")
    admin = bearer(admin_key)
    admin_id = await _key_id(context, admin_key)
    operator_key = await new_key(context, "operator")
    operator_id = await _key_id(context, operator_key)
    backend_key = await new_key(context, "backend", "acme")
    backend_id = await _key_id(context, backend_key)

    async def call(
        headers: dict[str, str], method: str, path: str, body: Any = None, status: int = 200
    ) -> tuple[Any, dict[str, Any]]:
        count = await _audit_count(context)
        now = clock.advance(timedelta(minutes=7))
        response = await client.request(method, path, headers=headers, json=body)
        assert response.status_code == status, response.text
        assert await _audit_count(context) == count + 1, f"{method} {path} not audited once"
        newest = (await _audit(client, admin, limit=1))[0]
        assert _at(newest) == now
        return (response.json() if response.content else None), newest

    created, record = await call(admin, "POST", "/v1/api-keys", {"role": "backend"}, 201)
    assert record["action"] == "api_key.create"
    assert (record["key_id"], record["role"]) == (admin_id, "admin")
    assert (record["target_type"], record["target_id"]) == ("api_key", created["id"])
    assert record["before"] is None
    assert record["after"] == {
        "id": created["id"],
        "role": "backend",
        "account": None,
        "name": None,
    }
    assert created["key"] not in str(record)

    body = {"id": "acme", "name": "Acme"}
    account, record = await call(bearer(backend_key), "POST", "/v1/accounts", body, 201)
    assert record["action"] == "account.create"
    assert (record["key_id"], record["role"]) == (backend_id, "backend")
    assert (record["target_type"], record["target_id"], record["account"]) == (
        "account",
        "acme",
        "acme",
    )
    assert record["before"] is None
    assert record["after"]["name"] == "Acme"
    assert record["after"]["version"] == 1

    _, record = await call(admin, "PATCH", "/v1/accounts/acme", {"name": "Acme Inc"})
    assert record["action"] == "account.update"
    assert record["before"]["name"] == "Acme"
    assert record["before"]["version"] == 1
    assert record["after"]["name"] == "Acme Inc"
    assert record["after"]["version"] == 2

    _, record = await call(admin, "PUT", "/v1/accounts/acme/queue-integration", {"kind": "local"})
    assert record["action"] == "queue_integration.put"
    assert (record["target_type"], record["target_id"]) == ("queue_integration", "acme")
    assert record["before"] is None
    assert record["after"]["kind"] == "local"

    body = {"name": "Default", "lineup": [{"channel": "email", "delay": "PT0S"}]}
    policy, record = await call(
        bearer(backend_key), "POST", "/v1/accounts/acme/policies", body, 201
    )
    assert record["action"] == "policy.create"
    assert (record["target_type"], record["target_id"]) == ("policy", policy["id"])
    assert record["account"] == "acme"

    _, record = await call(
        bearer(operator_key), "POST", f"/v1/accounts/acme/policies/{policy['id']}/pause"
    )
    assert record["action"] == "policy.pause"
    assert (record["key_id"], record["role"]) == (operator_id, "operator")
    assert record["before"] == {"status": "active"}
    assert record["after"] == {"status": "paused"}

    _, record = await call(admin, "DELETE", f"/v1/api-keys/{created['id']}", status=204)
    assert record["action"] == "api_key.revoke"
    assert record["target_id"] == created["id"]
    assert record["before"]["id"] == created["id"]

    # Reads write nothing.
    count = await _audit_count(context)
    for path in ("/v1/accounts", "/v1/accounts/acme", "/v1/api-keys", "/v1/admin/audit"):
        assert (await client.get(path, headers=admin)).status_code == 200
    assert await _audit_count(context) == count


@pytest.fixture
async def history(
    client: httpx.AsyncClient, context: AppContext, clock: FrozenClock
) -> dict[str, Any]:
    """Twelve audited calls by two keys, one minute apart (T0+1min … T0+12min)."""
    admin_key = await new_key(context, "admin")
    other_key = await new_key(context, "admin")
    admin, other = bearer(admin_key), bearer(other_key)
    calls: list[tuple[dict[str, str], str, str, Any]] = [
        (admin, "POST", "/v1/accounts", {"id": "acme", "name": "Acme"}),
        (admin, "POST", "/v1/accounts", {"id": "beta", "name": "Beta"}),
        (other, "PATCH", "/v1/accounts/acme", {"name": "Acme 2"}),
        (admin, "PUT", "/v1/accounts/acme/queue-integration", {"kind": "local"}),
        (other, "PUT", "/v1/accounts/beta/queue-integration", {"kind": "local"}),
        (admin, "PATCH", "/v1/accounts/beta", {"name": "Beta 2"}),
        (admin, "POST", "/v1/api-keys", {"role": "operator"}),
        (other, "POST", "/v1/api-keys", {"role": "backend", "account": "acme"}),
        (admin, "PATCH", "/v1/accounts/acme", {"name": "Acme 3"}),
        (other, "PUT", "/v1/accounts/acme/queue-integration", {"kind": "local"}),
        (admin, "PATCH", "/v1/accounts/beta", {"name": "Beta 3"}),
        (admin, "POST", "/v1/accounts", {"id": "gamma", "name": "Gamma"}),
    ]
    for headers, method, path, body in calls:
        clock.advance(timedelta(minutes=1))
        response = await client.request(method, path, headers=headers, json=body)
        assert response.status_code in (200, 201), response.text
    return {
        "admin": admin,
        "admin_id": await _key_id(context, admin_key),
        "other_id": await _key_id(context, other_key),
    }


async def test_audit_is_newest_first(client: httpx.AsyncClient, history: dict[str, Any]) -> None:
    items = await _audit(client, history["admin"])
    assert len(items) == 12
    assert [_at(i) for i in items] == [T0 + timedelta(minutes=m) for m in range(12, 0, -1)]
    assert items[0]["action"] == "account.create"
    assert items[0]["target_id"] == "gamma"
    assert items[0]["at"].endswith(("+00:00", "Z"))


async def test_audit_filters(client: httpx.AsyncClient, history: dict[str, Any]) -> None:
    admin = history["admin"]

    def ids(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(i["action"], i["target_id"]) for i in items]

    acme = await _audit(client, admin, account="acme")
    assert ids(acme) == [
        ("queue_integration.put", "acme"),
        ("account.update", "acme"),
        ("queue_integration.put", "acme"),
        ("account.update", "acme"),
        ("account.create", "acme"),
    ]  # the key created for acme is not account data: api_key records carry no account

    assert len(await _audit(client, admin, action="account.update")) == 4
    assert len(await _audit(client, admin, action="account.")) == 7
    assert len(await _audit(client, admin, action="api_key.")) == 2
    assert await _audit(client, admin, action="account") == []  # no dot: exact match only
    assert await _audit(client, admin, action="account.upd") == []

    assert len(await _audit(client, admin, target_type="queue_integration")) == 3
    beta = await _audit(client, admin, target_type="account", target_id="beta")
    assert ids(beta) == [
        ("account.update", "beta"),
        ("account.update", "beta"),
        ("account.create", "beta"),
    ]

    by_other = await _audit(client, admin, key_id=history["other_id"])
    assert len(by_other) == 4
    assert {i["key_id"] for i in by_other} == {history["other_id"]}
    by_admin = await _audit(client, admin, key_id=history["admin_id"])
    assert len(by_admin) == 8

    combined = await _audit(client, admin, account="beta", key_id=history["other_id"])
    assert ids(combined) == [("queue_integration.put", "beta")]


async def test_audit_since_until(client: httpx.AsyncClient, history: dict[str, Any]) -> None:
    admin = history["admin"]
    since = (T0 + timedelta(minutes=3)).isoformat()
    until = (T0 + timedelta(minutes=6)).isoformat()
    window = await _audit(client, admin, since=since, until=until)
    # since inclusive, until exclusive
    assert [_at(i) for i in window] == [T0 + timedelta(minutes=m) for m in (5, 4, 3)]

    # Any offset is accepted and means the same instant.
    shifted = (T0 + timedelta(minutes=3)).astimezone(
        datetime.fromisoformat("2026-01-01T00:00:00+05:30").tzinfo
    )
    assert len(await _audit(client, admin, since=shifted.isoformat())) == 10
    assert len(await _audit(client, admin, since="2026-03-02T09:10:00Z")) == 3
    assert len(await _audit(client, admin, until="2026-03-02T09:01:00Z")) == 0

    for name in ("since", "until"):
        response = await client.get(
            "/v1/admin/audit", headers=admin, params={name: "2026-03-02T09:05:00"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["field"] == name
        assert response.headers["content-type"] == PROBLEM
        response = await client.get("/v1/admin/audit", headers=admin, params={name: "yesterday"})
        assert response.status_code == 422
        assert response.json()["field"] == name


async def test_audit_pagination(client: httpx.AsyncClient, history: dict[str, Any]) -> None:
    admin = history["admin"]
    everything = await _audit(client, admin, limit=1000)
    for limit in (1, 5, 12, 100):
        await _page_through(client, admin, limit, everything)
    # Filters hold across pages.
    acme = await _audit(client, admin, account="acme")
    assert len(acme) == 5
    await _page_through(client, admin, 2, acme, account="acme")


async def _page_through(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    limit: int,
    everything: list[dict[str, Any]],
    **filters: str,
) -> None:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit, **filters}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/admin/audit", headers=admin, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        seen.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert [i["id"] for i in seen] == [i["id"] for i in everything]
    assert len({i["id"] for i in seen}) == len(everything)
    assert pages == -(-len(everything) // limit)  # ceil: no empty trailing page


async def test_audit_pagination_with_equal_timestamps(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    """Records written at the same instant are still each returned exactly once."""
    admin = bearer(await new_key(context, "admin"))
    for n in range(7):
        response = await client.post("/v1/api-keys", headers=admin, json={"role": "operator"})
        assert response.status_code == 201, n
    everything = await _audit(client, admin)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/admin/audit", headers=admin, params=params)).json()
        seen.extend(i["id"] for i in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [i["id"] for i in everything]
    assert len(set(seen)) == 7


async def test_audit_filter_and_limit_validation(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
    ):
        response = await client.get("/v1/admin/audit", headers=admin, params=params)
        assert response.status_code == 422, params
        assert response.json()["field"] == field


async def test_audit_cursor_without_offset_is_422(
    lenient_client: httpx.AsyncClient, context: AppContext
) -> None:
    admin = bearer(await new_key(context, "admin"))
    response = await lenient_client.get(
        "/v1/admin/audit", headers=admin, params={"cursor": "2026-03-02T09:00:00|aud_x"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "cursor"


async def test_audit_action_prefix_is_literal(
    client: httpx.AsyncClient, history: dict[str, Any]
) -> None:
    assert await _audit(client, history["admin"], action="%.") == []
    assert await _audit(client, history["admin"], action="account_create.") == []


async def test_audit_is_operator_only(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    operator = bearer(await new_key(context, "operator"))
    backend = bearer(await new_key(context, "backend"))
    assert (await client.get("/v1/admin/audit", headers=operator)).status_code == 200
    response = await client.get("/v1/admin/audit", headers=backend)
    assert response.status_code == 403


# --- refused requests change nothing ---------------------------------------------------------


async def _snapshot(context: AppContext) -> dict[str, Any]:
    async with context.sessions() as session:
        counts = {}
        for model in (Account, ApiKey, AuditRecord, Policy, QueueIntegration):
            counts[model.__name__] = (
                await session.execute(select(func.count()).select_from(model))
            ).scalar_one()
        versions = dict((await session.execute(select(Account.id, Account.version))).all())
        names = dict((await session.execute(select(Account.id, Account.name))).all())
    return {"counts": counts, "versions": versions, "names": names}


async def test_refused_requests_write_nothing(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str], clock: FrozenClock
) -> None:
    await setup_account(client, admin, "acme")
    before = await _snapshot(context)
    clock.advance(timedelta(hours=1))
    refused: list[tuple[str, str, Any, dict[str, str], int]] = [
        ("POST", "/v1/api-keys", {"role": "operator", "account": "acme"}, admin, 422),
        ("POST", "/v1/api-keys", {"role": "root"}, admin, 422),
        ("POST", "/v1/accounts", {"id": "bad id", "name": "x"}, admin, 422),
        ("POST", "/v1/accounts", {"id": "acme", "name": "Again"}, admin, 409),
        (
            "PATCH",
            "/v1/accounts/acme",
            {"name": "x", "owner": {"name": "o", "email": "no"}},
            admin,
            422,
        ),
        ("PATCH", "/v1/accounts/acme", {"name": ""}, admin, 422),
        ("PUT", "/v1/accounts/acme/queue-integration", {"kind": "sqs", "region": "x"}, admin, 422),
        ("DELETE", "/v1/api-keys/key_nope", None, admin, 404),
        ("PATCH", "/v1/accounts/acme", {"name": "x"}, {**admin, "If-Match": '"9"'}, 412),
        ("POST", "/v1/accounts", {"id": "new", "name": "New"}, {}, 401),
    ]
    for method, path, body, headers, status in refused:
        response = await client.request(method, path, headers=headers, json=body)
        assert response.status_code == status, f"{method} {path}: {response.text}"
    assert await _snapshot(context) == before


# --- problem+json ------------------------------------------------------------------------


def _assert_problem(
    response: httpx.Response, status: int, slug: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["type"].startswith(TYPE_PREFIX)
    if slug:
        assert problem["type"] == TYPE_PREFIX + slug
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    assert problem["instance"] == response.request.url.path
    return problem


async def test_problem_shapes(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    await setup_account(client, admin, "acme")
    operator = bearer(await new_key(context, "operator"))

    problem = _assert_problem(await client.get("/v1/accounts"), 401, "unauthenticated")
    assert problem["field"] == "Authorization"

    _assert_problem(
        await client.post("/v1/api-keys", headers=operator, json={"role": "admin"}),
        403,
        "forbidden",
    )
    _assert_problem(await client.get("/v1/accounts/ghost", headers=admin), 404, "not-found")
    _assert_problem(await client.get("/v1/no-such-thing", headers=admin), 404, "not-found")
    _assert_problem(await client.get("/no-such-thing"), 404, "not-found")

    response = await client.put("/v1/api-keys", headers=admin, json={})
    _assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["allow"]

    problem = _assert_problem(
        await client.post("/v1/accounts", headers=admin, json={"id": "acme", "name": "A"}), 409
    )
    assert problem["title"] == "Conflict"
    assert problem["field"] == "id"

    problem = _assert_problem(
        await client.patch(
            "/v1/accounts/acme", headers={**admin, "If-Match": '"41"'}, json={"name": "x"}
        ),
        412,
        "precondition-failed",
    )
    assert problem["current_version"] == 1

    response = await client.post(
        "/v1/accounts",
        headers=admin,
        json={"id": "bad id", "name": "", "owner": {"name": "o", "phone": "12"}},
    )
    problem = _assert_problem(response, 422, "validation-error")
    fields = [e["field"] for e in problem["errors"]]
    assert set(fields) == {"id", "name", "owner.phone"}
    for error in problem["errors"]:
        assert set(error) == {"field", "reason"}
        assert error["reason"]
        assert f"{error['field']}: {error['reason']}" in problem["detail"]
    assert (problem["field"], problem["reason"]) == (fields[0], problem["errors"][0]["reason"])
    assert not problem["reason"].startswith("Value error")

    # A domain-level validation error has the same shape.
    problem = _assert_problem(
        await client.post("/v1/api-keys", headers=admin, json={"role": "admin", "account": "a"}),
        422,
        "validation-error",
    )
    assert problem["errors"] == [{"field": "account", "reason": problem["reason"]}]

    # Query validation errors name the parameter.
    problem = _assert_problem(
        await client.get("/v1/admin/audit", headers=admin, params={"limit": "x"}), 422
    )
    assert problem["field"] == "limit"


async def test_malformed_json_is_a_422_problem(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/accounts",
        headers={**admin, "Content-Type": "application/json"},
        content=b'{"id": "acme", ',
    )
    problem = _assert_problem(response, 422, "validation-error")
    assert problem["field"] == "body"  # not the byte offset of the error
    response = await client.post("/v1/accounts", headers=admin, json=["acme"])
    _assert_problem(response, 422, "validation-error")


async def test_malformed_json_without_a_valid_key_is_401_not_a_body_error(
    client: httpx.AsyncClient,
) -> None:
    for headers in ({}, {"Authorization": "Bearer de_nope_nope"}, {"Authorization": "Basic x"}):
        response = await client.post(
            "/v1/accounts",
            headers={**headers, "Content-Type": "application/json"},
            content=b'{"id": "acme", ',
        )
        problem = _assert_problem(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "body" not in problem["detail"]


async def test_a_body_that_is_not_json_is_a_415_problem_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    form = {**admin, "Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post("/v1/accounts", headers=form, content=b'{"id":"c","name":"C"}')
    problem = _assert_problem(response, 415, "unsupported-media-type")
    assert problem["field"] == "Content-Type"
    assert (await client.get("/v1/accounts/c", headers=admin)).status_code == 404
    # JSON spelled with parameters or as a +json type is read; no Content-Type is refused too.
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        body = {"id": f"a-{len(content_type)}", "name": "A"}
        headers = {**admin, "Content-Type": content_type}
        response = await client.post("/v1/accounts", headers=headers, content=json.dumps(body))
        assert response.status_code == 201, response.text
    bare = await client.post(
        "/v1/accounts", headers=admin, content=json.dumps({"id": "bare", "name": "B"})
    )
    _assert_problem(bare, 415, "unsupported-media-type")
