"""R-ACC-1: accounts with their incident contacts, and who may see them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from dispatch_engine.context import AppContext
from dispatch_engine.models import Policy
from tests.conftest import bearer, new_key, setup_account


def _body(account: str = "acme", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": account,
        "name": "Acme Corp",
        "owner": {
            "name": "Olivia Owner",
            "email": "Olivia.Owner@Example.COM",
            "phone": "+1 415 555 0100",
        },
        "admins": [
            {"name": "Adam Admin", "email": "ADAM@example.com"},
            {"name": "Ada Second", "phone": "+44 20 7946 0958"},
        ],
        "decision_maker": {"name": "Dana Decider", "email": "dana@EXAMPLE.org"},
    }
    body.update(overrides)
    return body


async def test_create_normalises_contacts(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post("/v1/accounts", headers=admin, json=_body())
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == '"1"'
    account = response.json()
    assert account["id"] == "acme"
    assert account["name"] == "Acme Corp"
    assert account["version"] == 1
    assert account["owner"] == {
        "name": "Olivia Owner",
        "email": "olivia.owner@example.com",
        "phone": "+14155550100",
    }
    assert account["admins"] == [
        {"name": "Adam Admin", "email": "adam@example.com", "phone": None},
        {"name": "Ada Second", "email": None, "phone": "+442079460958"},
    ]
    assert account["decision_maker"] == {
        "name": "Dana Decider",
        "email": "dana@example.org",
        "phone": None,
    }

    response = await client.get("/v1/accounts/acme", headers=admin)
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    assert response.json() == account


async def test_minimal_account(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post("/v1/accounts", headers=admin, json={"id": "min", "name": "Min"})
    assert response.status_code == 201, response.text
    account = response.json()
    assert account["owner"] is None
    assert account["admins"] == []
    assert account["decision_maker"] is None


async def test_duplicate_id_is_409(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await client.post("/v1/accounts", headers=admin, json=_body())).status_code == 201
    response = await client.post("/v1/accounts", headers=admin, json=_body(name="Again"))
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["field"] == "id"
    assert problem["type"].startswith("urn:dispatch-engine:problem:")
    # The first account is untouched.
    assert (await client.get("/v1/accounts/acme", headers=admin)).json()["name"] == "Acme Corp"


async def test_invalid_id_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for bad_id in ("ac me", "a" * 65, "", "-acme", "acme/other", "ac\u00e9me", "acme?x", 42):
        response = await client.post("/v1/accounts", headers=admin, json=_body(bad_id))
        assert response.status_code == 422, f"{bad_id!r}: {response.text}"
        assert response.json()["field"] == "id", bad_id
    assert (await client.get("/v1/accounts", headers=admin)).json() == []


async def test_longest_valid_id(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    account_id = "a" + "b" * 62 + "c"
    assert len(account_id) == 64
    response = await client.post("/v1/accounts", headers=admin, json=_body(account_id))
    assert response.status_code == 201, response.text
    assert (await client.get(f"/v1/accounts/{account_id}", headers=admin)).status_code == 200


MALFORMED_CONTACTS: list[tuple[str, str, Any]] = [
    ("owner.email", "owner", {"name": "O", "email": "olivia-at-example.com"}),
    ("owner.phone", "owner", {"name": "O", "phone": "4155550100"}),
    ("owner.phone", "owner", {"name": "O", "phone": "+1 555 0"}),
    ("admins.1.email", "admins", [{"name": "A"}, {"name": "B", "email": "b@@x..y"}]),
    ("decision_maker.phone", "decision_maker", {"name": "D", "phone": "+99 notanumber"}),
]


async def test_malformed_contact_is_422_without_echoing_it(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for path, contact, bad in MALFORMED_CONTACTS:
        response = await client.post("/v1/accounts", headers=admin, json=_body(**{contact: bad}))
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["field"] == path, response.text
        field = path.rsplit(".", 1)[1]
        contacts = bad if isinstance(bad, list) else [bad]
        bad_value = next(c[field] for c in contacts if field in c)
        assert problem["reason"]
        assert bad_value not in problem["reason"]
        assert bad_value not in response.text  # neither in detail nor anywhere else
    assert (await client.get("/v1/accounts", headers=admin)).json() == []


async def test_unknown_fields_are_refused(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.post("/v1/accounts", headers=admin, json=_body(plan="gold"))
    assert response.status_code == 422
    assert response.json()["field"] == "plan"

    owner = {"name": "O", "email": "o@example.com", "title": "CEO"}
    response = await client.post("/v1/accounts", headers=admin, json=_body(owner=owner))
    assert response.status_code == 422
    assert response.json()["field"] == "owner.title"

    assert (await client.post("/v1/accounts", headers=admin, json=_body())).status_code == 201
    response = await client.patch("/v1/accounts/acme", headers=admin, json={"id": "other"})
    assert response.status_code == 422
    assert response.json()["field"] == "id"


async def test_patch_bumps_version_and_checks_if_match(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.post("/v1/accounts", headers=admin, json=_body())

    response = await client.patch("/v1/accounts/acme", headers=admin, json={"name": "Acme Inc"})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'
    patched = response.json()
    assert patched["name"] == "Acme Inc"
    assert patched["version"] == 2
    assert patched["owner"]["email"] == "olivia.owner@example.com"  # untouched
    assert len(patched["admins"]) == 2

    admins = [{"name": "New Admin", "email": "NEW@Example.com", "phone": "+14155550199"}]
    response = await client.patch(
        "/v1/accounts/acme", headers={**admin, "If-Match": '"2"'}, json={"admins": admins}
    )
    assert response.status_code == 200, response.text
    assert response.json()["admins"] == [
        {"name": "New Admin", "email": "new@example.com", "phone": "+14155550199"}
    ]
    assert response.json()["version"] == 3
    assert response.json()["name"] == "Acme Inc"

    response = await client.patch(
        "/v1/accounts/acme", headers={**admin, "If-Match": '"2"'}, json={"name": "Stale"}
    )
    assert response.status_code == 412, response.text
    assert response.json()["type"] == "urn:dispatch-engine:problem:precondition-failed"
    current = (await client.get("/v1/accounts/acme", headers=admin)).json()
    assert current["name"] == "Acme Inc"
    assert current["version"] == 3

    response = await client.patch(
        "/v1/accounts/acme", headers={**admin, "If-Match": 'W/"3"'}, json={"owner": None}
    )
    assert response.status_code == 200, response.text
    assert response.json()["owner"] is None
    assert response.json()["version"] == 4

    # Nothing changed: same version, same ETag. A null name is refused.
    for unchanged in ({}, {"name": "Acme Inc"}, {"owner": None}):
        response = await client.patch("/v1/accounts/acme", headers=admin, json=unchanged)
        assert response.status_code == 200, response.text
        assert (response.json()["version"], response.headers["etag"]) == (4, '"4"'), unchanged
    response = await client.patch("/v1/accounts/acme", headers=admin, json={"name": None})
    assert (response.status_code, response.json()["field"]) == (422, "name")
    assert (await client.get("/v1/accounts/acme", headers=admin)).json()["name"] == "Acme Inc"


async def test_patch_unknown_account_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.patch("/v1/accounts/ghost", headers=admin, json={"name": "x"})
    assert response.status_code == 404
    assert (await client.get("/v1/accounts/ghost", headers=admin)).status_code == 404


async def test_patch_with_bad_email_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.post("/v1/accounts", headers=admin, json=_body())
    before = (await client.get("/v1/accounts/acme", headers=admin)).json()
    response = await client.patch(
        "/v1/accounts/acme",
        headers=admin,
        json={"name": "Changed", "owner": {"name": "X", "email": "broken"}},
    )
    assert response.status_code == 422
    assert response.json()["field"] == "owner.email"
    assert (await client.get("/v1/accounts/acme", headers=admin)).json() == before


async def test_list_accounts_by_role(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    for account in ("acme", "beta", "gamma"):
        await setup_account(client, admin, account, queue=False)
    everyone = ["acme", "beta", "gamma"]
    keys = {
        "admin": admin,
        "operator": bearer(await new_key(context, "operator")),
        "backend": bearer(await new_key(context, "backend")),
        "backend_beta": bearer(await new_key(context, "backend", "beta")),
    }
    expected = {"admin": everyone, "operator": everyone, "backend": everyone}
    expected["backend_beta"] = ["beta"]
    for role, headers in keys.items():
        response = await client.get("/v1/accounts", headers=headers)
        assert response.status_code == 200, response.text
        assert [a["id"] for a in response.json()] == expected[role], role


async def test_backend_key_limited_to_one_account(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    await setup_account(client, admin, "beta", queue=False)
    limited = bearer(await new_key(context, "backend", "acme"))

    response = await client.post("/v1/accounts", headers=limited, json=_body("beta2"))
    assert response.status_code == 404, response.text
    assert "beta2" not in [
        a["id"] for a in (await client.get("/v1/accounts", headers=admin)).json()
    ]

    assert (await client.get("/v1/accounts/beta", headers=limited)).status_code == 404
    response = await client.patch("/v1/accounts/beta", headers=limited, json={"name": "x"})
    assert response.status_code == 404

    # Its own account it may create, read and edit.
    response = await client.post("/v1/accounts", headers=limited, json=_body("acme"))
    assert response.status_code == 201, response.text
    assert (await client.get("/v1/accounts/acme", headers=limited)).status_code == 200
    response = await client.patch("/v1/accounts/acme", headers=limited, json={"name": "Mine"})
    assert response.status_code == 200
    assert [a["id"] for a in (await client.get("/v1/accounts", headers=limited)).json()] == ["acme"]


async def test_operator_cannot_create_or_edit(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    await setup_account(client, admin, "acme", queue=False)
    operator = bearer(await new_key(context, "operator"))
    assert (await client.post("/v1/accounts", headers=operator, json=_body("b"))).status_code == 403
    response = await client.patch("/v1/accounts/acme", headers=operator, json={"name": "x"})
    assert response.status_code == 403
    assert (await client.get("/v1/accounts/acme", headers=operator)).status_code == 200


async def test_account_gets_exactly_one_sandbox_policy(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    await setup_account(client, admin, "acme")
    await setup_account(client, admin, "beta")
    response = await client.post(
        "/v1/accounts/acme/policies",
        headers=admin,
        json={"name": "Default", "lineup": [{"channel": "email", "delay": "PT0S"}]},
    )
    assert response.status_code == 201, response.text

    policies = (await client.get("/v1/accounts/acme/policies", headers=admin)).json()
    assert [(p["name"], p["sandbox"]) for p in policies] == [("Sandbox", True), ("Default", False)]

    async with context.sessions() as session:
        counts = dict(
            (
                await session.execute(
                    select(Policy.account_id, func.count())
                    .where(Policy.is_sandbox.is_(True))
                    .group_by(Policy.account_id)
                )
            ).all()
        )
    assert counts == {"acme": 1, "beta": 1}

    # A refused duplicate creates no second sandbox.
    assert (await client.post("/v1/accounts", headers=admin, json=_body())).status_code == 409
    async with context.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(Policy))).scalar_one()
    assert total == 3


# --- concurrency: the checks must hold when requests race (several API processes on PG) -------


async def test_racing_creates_of_one_id_give_one_201_and_409s(
    lenient_client: httpx.AsyncClient,
    admin: dict[str, str],
    db_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    for trial in range(3):
        responses = await asyncio.gather(
            *(
                lenient_client.post(
                    "/v1/accounts", headers=admin, json={"id": f"race{trial}", "name": f"n{n}"}
                )
                for n in range(6)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201, 409, 409, 409, 409, 409], statuses


async def test_racing_patches_with_one_if_match_let_one_win(
    lenient_client: httpx.AsyncClient,
    admin: dict[str, str],
    db_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    await setup_account(lenient_client, admin, "acme", queue=False)
    for trial in range(3):
        version = trial + 1
        responses = await asyncio.gather(
            *(
                lenient_client.patch(
                    "/v1/accounts/acme",
                    headers={**admin, "If-Match": f'"{version}"'},
                    json={"name": f"edit {trial}.{n}"},
                )
                for n in range(6)
            )
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 412, 412, 412, 412, 412], statuses
        current = (await lenient_client.get("/v1/accounts/acme", headers=admin)).json()
        assert current["version"] == version + 1
