"""A policy's `min_validity_left` through the HTTP API (issue 22, item 6): a business rule,
PT1H by default, 0 to P30D, one canonical spelling, merged and copied like the others."""

from __future__ import annotations

import httpx

from tests.conftest import create_policy
from tests.helpers import POLICIES, assert_problem, fetch, patch


async def test_default_set_patch_and_canonical_spelling(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    assert policy["business_rules"]["min_validity_left"] == "PT1H"

    day = await create_policy(client, acme, name="Day", business_rules={"min_validity_left": "P1D"})
    assert day["business_rules"]["min_validity_left"] == "P1D"

    response = await patch(client, acme, policy, {"business_rules": {"min_validity_left": "pt90m"}})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["business_rules"]["min_validity_left"] == "PT1H30M"
    assert changed["business_rules"]["time_zone"] == "UTC"  # merged, the rest kept
    assert changed["version"] == policy["version"] + 1

    response = await patch(client, acme, changed, {"business_rules": {"min_validity_left": "PT0S"}})
    assert response.status_code == 200, response.text
    off = response.json()
    assert off["business_rules"]["min_validity_left"] == "PT0S"
    assert all("too_late" not in m["checks"] for m in off["lineup"])
    assert all("too_late" in m["checks"] for m in changed["lineup"])


async def test_out_of_range_or_malformed_values_are_refused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    for bad in ("P30DT1S", "P31D", "P1Y", "-PT1H", "soon", 3600):
        rules = {"min_validity_left": bad}
        response = await client.post(
            POLICIES, headers=acme, json={"name": "V", "business_rules": rules}
        )
        assert_problem(response, 422, "validation-error", field="business_rules.min_validity_left")
        response = await patch(client, acme, policy, {"business_rules": rules})
        assert_problem(response, 422, "validation-error", field="business_rules.min_validity_left")
    assert await fetch(client, acme, policy["id"]) == policy
    response = await patch(client, acme, policy, {"business_rules": {"min_validity_left": "P30D"}})
    assert response.status_code == 200, response.text


async def test_copy_to_sandbox_copies_it(client: httpx.AsyncClient, acme: dict[str, str]) -> None:
    source = await create_policy(
        client, acme, name="Real", business_rules={"min_validity_left": "PT6H"}
    )
    response = await client.post(f"{POLICIES}/{source['id']}/copy-to-sandbox", headers=acme)
    assert response.status_code == 200, response.text
    assert response.json()["business_rules"]["min_validity_left"] == "PT6H"
