"""R-ACC-2: API keys are shown once, stored hashed, revocable, and work for their role."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import ApiKey
from tests.conftest import bearer, setup_account


async def _create(client: httpx.AsyncClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", headers=admin, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    problem = response.json()
    assert problem["type"] == "urn:dispatch-engine:problem:unauthenticated"
    assert problem["status"] == 401


async def test_create_keys_of_every_role(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await setup_account(client, admin, "acme", queue=False)
    backend = await _create(client, admin, role="backend", account="acme", name="EM prod")
    unlimited = await _create(client, admin, role="backend")
    operator = await _create(client, admin, role="operator")
    second_admin = await _create(client, admin, role="admin")

    assert backend["role"] == "backend"
    assert backend["account"] == "acme"
    assert backend["name"] == "EM prod"
    assert backend["revoked_at"] is None
    assert unlimited["account"] is None
    assert operator["role"] == "operator"
    assert second_admin["role"] == "admin"
    for created in (backend, unlimited, operator, second_admin):
        assert created["key"].startswith(f"de_{created['prefix']}_")
        assert created["id"] != created["key"]
    assert len({k["key"] for k in (backend, unlimited, operator, second_admin)}) == 4


async def test_key_is_shown_at_creation_only(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await _create(client, admin, role="operator")
    secret = created["key"].split("_", 2)[2]

    response = await client.get("/v1/api-keys", headers=admin)
    assert response.status_code == 200
    assert created["key"] not in response.text
    assert secret not in response.text
    listed = {k["id"]: k for k in response.json()}
    assert set(listed[created["id"]]) == {
        "id",
        "role",
        "account",
        "name",
        "prefix",
        "created_at",
        "revoked_at",
    }
    assert listed[created["id"]]["prefix"] == created["prefix"]


async def test_database_row_holds_only_prefix_and_hash(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    created = await _create(client, admin, role="backend", name="label")
    _, prefix, secret = created["key"].split("_", 2)
    assert prefix == created["prefix"]

    async with context.sessions() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.id == created["id"]))).scalar_one()
    assert row.prefix == prefix
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    for column in ApiKey.__table__.columns:
        value = str(getattr(row, column.key))
        assert secret not in value, column.key
        # Not even a fragment of the secret (any 8 consecutive characters).
        for start in range(len(secret) - 7):
            assert secret[start : start + 8] not in value, column.key

    audit = await client.get("/v1/admin/audit?target_type=api_key", headers=admin)
    assert audit.status_code == 200
    assert secret not in audit.text
    assert row.secret_hash not in audit.text


async def test_new_key_works_for_its_role(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for role, allowed, forbidden in (
        ("admin", "/v1/api-keys", None),
        ("operator", "/v1/admin/audit", "/v1/api-keys"),
        ("backend", "/v1/accounts", "/v1/admin/audit"),
    ):
        key = bearer((await _create(client, admin, role=role))["key"])
        response = await client.get(allowed, headers=key)
        assert response.status_code == 200, f"{role}: {response.text}"
        if forbidden:
            response = await client.get(forbidden, headers=key)
            assert response.status_code == 403, f"{role}: {response.text}"
            assert response.json()["type"] == "urn:dispatch-engine:problem:forbidden"


async def test_revoked_key_gets_401_and_revoking_twice_is_harmless(
    client: httpx.AsyncClient, admin: dict[str, str], clock: FrozenClock
) -> None:
    created = await _create(client, admin, role="operator")
    key = bearer(created["key"])
    assert (await client.get("/v1/accounts", headers=key)).status_code == 200

    response = await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)
    assert response.status_code == 204
    assert response.content == b""
    _assert_unauthenticated(await client.get("/v1/accounts", headers=key))

    listed = {k["id"]: k for k in (await client.get("/v1/api-keys", headers=admin)).json()}
    revoked_at = listed[created["id"]]["revoked_at"]
    assert revoked_at is not None

    clock.advance(timedelta(hours=1))
    response = await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)
    assert response.status_code == 204
    listed = {k["id"]: k for k in (await client.get("/v1/api-keys", headers=admin)).json()}
    assert listed[created["id"]]["revoked_at"] == revoked_at  # first revocation time kept
    _assert_unauthenticated(await client.get("/v1/accounts", headers=key))
    # The admin key is untouched.
    assert (await client.get("/v1/api-keys", headers=admin)).status_code == 200


async def test_revoke_unknown_key_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.delete("/v1/api-keys/key_doesnotexist", headers=admin)
    assert response.status_code == 404
    assert response.json()["type"] == "urn:dispatch-engine:problem:not-found"


async def test_account_on_non_backend_role_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    before = (await client.get("/v1/api-keys", headers=admin)).json()
    for role in ("operator", "admin"):
        response = await client.post(
            "/v1/api-keys", headers=admin, json={"role": role, "account": "acme"}
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["field"] == "account"
        assert [e["field"] for e in problem["errors"]] == ["account"]
    assert (await client.get("/v1/api-keys", headers=admin)).json() == before


async def test_invalid_create_body_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"role": "superuser"}, "role"),
        ({"role": "Admin"}, "role"),
        ({}, "role"),
        ({"role": "backend", "account": "not valid!"}, "account"),
        ({"role": "backend", "colour": "blue"}, "colour"),
    ]
    for body, field in cases:
        response = await client.post("/v1/api-keys", headers=admin, json=body)
        assert response.status_code == 422, f"{body}: {response.text}"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == field, body
    assert len((await client.get("/v1/api-keys", headers=admin)).json()) == 1


async def test_missing_or_malformed_authorization_is_401(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    full = admin["Authorization"].removeprefix("Bearer ")
    for authorization in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer de_short_secret",
        "Token de_0123456789ab_" + "A" * 43,
        f"Bearer {full}x",  # a real key with a character too many
        f"Bearer {full[:-1]}",  # ... or too few
        f"{full}",  # no scheme
    ):
        headers = {} if authorization is None else {"Authorization": authorization}
        _assert_unauthenticated(await client.get("/v1/accounts", headers=headers))
    assert (await client.get("/v1/accounts", headers=admin)).status_code == 200


async def test_unknown_key_is_401(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    # Well-formed but never issued.
    _assert_unauthenticated(
        await client.get("/v1/accounts", headers=bearer("de_0123456789ab_" + "A" * 43))
    )
    # A real prefix with the wrong secret.
    created = await _create(client, admin, role="admin")
    wrong = f"de_{created['prefix']}_" + "B" * 43
    assert wrong != created["key"]
    _assert_unauthenticated(await client.get("/v1/accounts", headers=bearer(wrong)))


async def test_non_admin_cannot_manage_keys(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    operator = bearer((await _create(client, admin, role="operator"))["key"])
    target = await _create(client, admin, role="backend")
    for method, path, body in (
        ("POST", "/v1/api-keys", {"role": "admin"}),
        ("GET", "/v1/api-keys", None),
        ("DELETE", f"/v1/api-keys/{target['id']}", None),
    ):
        response = await client.request(method, path, headers=operator, json=body)
        assert response.status_code == 403, f"{method} {path}: {response.text}"
    # The target key still works.
    assert (await client.get("/v1/accounts", headers=bearer(target["key"]))).status_code == 200
