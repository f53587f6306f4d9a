"""Every list pages the same way (issue 20 §2): `limit` (1–1000) and an opaque `cursor`, the
next page named in `Link` and `X-Next-Cursor`, one stable order, no row twice or missed;
a cursor that is not one of ours is a 422 on `cursor`."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import create_policy, new_key, report_incident, setup_account
from tests.helpers import ACME, assert_problem, dispatch_body

LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


async def walk(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, limit: int
) -> list[dict[str, Any]]:
    """Every item of a list, following its Link headers `limit` at a time."""
    items: list[dict[str, Any]] = []
    url: str | None = f"{path}{'&' if '?' in path else '?'}limit={limit}"
    while url is not None:
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        page = body["items"] if isinstance(body, dict) else body
        assert len(page) <= limit
        items += page
        link = response.headers.get("link")
        if link is None:
            assert "x-next-cursor" not in response.headers
            url = None
        else:
            match = LINK.match(link)
            assert match, link
            url = match["url"]
            assert url.startswith(path.split("?")[0])  # a relative reference, same list
            assert response.headers["x-next-cursor"] in url
            assert len(page) == limit  # only a full page says there is more
    return items


async def assert_pages(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, expected: int
) -> list[dict[str, Any]]:
    """The list read whole equals the list read a page at a time, at several page sizes."""
    whole = await walk(client, headers, path, 1000)
    assert len(whole) == expected, whole
    for limit in (1, 2, 3):
        assert await walk(client, headers, path, limit) == whole
    for bad in ("0", "1001", "x"):
        response = await client.get(
            f"{path}{'&' if '?' in path else '?'}limit={bad}", headers=headers
        )
        assert_problem(response, 422, "validation-error", field="limit")
    response = await client.get(
        f"{path}{'&' if '?' in path else '?'}cursor=bm90LW91cnM", headers=headers
    )
    assert_problem(response, 422, "validation-error", field="cursor")
    return whole


async def test_configuration_lists_page(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for name in ("acme", "beta", "gamma", "delta"):
        await setup_account(client, admin, name)
    accounts = await assert_pages(client, admin, "/v1/accounts", 4)
    assert [a["id"] for a in accounts] == ["acme", "beta", "delta", "gamma"]

    policies = [await create_policy(client, admin, name=f"P{i}") for i in range(3)]
    listed = await assert_pages(client, admin, f"{ACME}/policies", 4)
    assert listed[0]["sandbox"] is True  # the sandbox first, then by creation
    assert [p["id"] for p in listed[1:]] == [p["id"] for p in policies]

    made = []
    for i in range(3):
        response = await client.post(
            f"{ACME}/dispatches",
            headers=admin,
            json=dispatch_body(policies[0], questionnaire_id=f"q{i}"),
        )
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
    assert [d["id"] for d in await assert_pages(client, admin, f"{ACME}/dispatches", 3)] == made

    keys_before = len(await walk(client, admin, "/v1/api-keys", 1000))
    for _ in range(3):
        response = await client.post("/v1/api-keys", headers=admin, json={"role": "operator"})
        assert response.status_code == 201, response.text
    await assert_pages(client, admin, "/v1/api-keys", keys_before + 3)


async def test_operator_lists_page(
    client: httpx.AsyncClient, admin: dict[str, str], context: Any
) -> None:
    await setup_account(client, admin, "acme")
    incident = await report_incident(client, admin)
    for target in ("email", "sms"):
        response = await client.post(
            "/v1/admin/pauses", headers=admin, json={"scope": "channel", "target": target}
        )
        assert response.status_code == 201, response.text
    response = await client.post(
        "/v1/admin/pauses",
        headers=admin,
        json={"scope": "account", "target": "acme", "incident": incident},
    )
    assert response.status_code == 201, response.text
    await assert_pages(client, admin, "/v1/admin/pauses", 3)
    await assert_pages(client, admin, f"/v1/admin/pauses?incident={incident}", 1)

    for i in range(3):
        response = await client.post(
            "/v1/admin/notification-webhooks",
            headers=admin,
            json={"name": f"ops{i}", "url": f"https://hooks.example.com/services/T{i}"},
        )
        assert response.status_code == 201, response.text
    await assert_pages(client, admin, "/v1/admin/notification-webhooks", 3)

    base = f"/v1/incidents/{incident}"
    for i in range(3):
        response = await client.post(
            f"{base}/status-updates",
            headers=admin,
            json={"template": "investigating", "symptoms": f"symptom {i}"},
        )
        assert response.status_code == 201, response.text
        response = await client.post(
            f"{base}/communications",
            headers=admin,
            json={
                "account": "acme",
                "channel": "phone",
                "recipient": "+14155550100",
                "what": f"Call {i}",
            },
        )
        assert response.status_code == 201, response.text
    await assert_pages(client, admin, f"{base}/status-updates", 3)
    await assert_pages(client, admin, f"{base}/communications", 3)
    await assert_pages(client, admin, f"{base}/approvals", 0)
    await assert_pages(client, admin, f"{base}/resends", 0)
    # the two lists that were pages from the start also say it in their headers
    await assert_pages(client, admin, "/v1/incidents", 1)
    audit = await walk(client, admin, "/v1/admin/audit", 1000)
    assert audit and await walk(client, admin, "/v1/admin/audit", 4) == audit


async def test_a_backend_key_pages_through_its_one_account(
    client: httpx.AsyncClient, admin: dict[str, str], context: Any
) -> None:
    for name in ("acme", "beta"):
        await setup_account(client, admin, name)
    backend = {"Authorization": f"Bearer {await new_key(context, 'backend', 'beta')}"}
    assert [a["id"] for a in await walk(client, backend, "/v1/accounts", 1)] == ["beta"]
