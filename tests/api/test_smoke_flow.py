"""The README walkthrough, end to end through the HTTP API."""

from __future__ import annotations

import httpx

from tests.conftest import create_policy, setup_account, templates_for


async def test_key_account_integration_policy_dispatch(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await setup_account(client, admin)
    policies = (await client.get("/v1/accounts/acme/policies", headers=admin)).json()
    assert [p["name"] for p in policies] == ["Sandbox"]
    assert policies[0]["sandbox"] is True

    policy = await create_policy(client, admin)
    assert [m["position"] for m in policy["lineup"]] == [1, 2, 3]
    assert policy["total_delay"] == "P5D"
    assert policy["lineup"][0]["checks"] == [
        "unsubscribe",
        "fatigue_pending_token",
        "too_late",
        "business_window",
    ]

    response = await client.post(
        "/v1/accounts/acme/dispatches",
        headers=admin,
        json={
            "questionnaire_id": "q-1",
            "policy_id": policy["id"],
            "token_validity": "P10D",
            "message_templates": templates_for(policy),
        },
    )
    assert response.status_code == 201, response.text
    dispatch = response.json()
    assert dispatch["status"] == "active"
    assert dispatch["missing_templates"] == []

    listed = (await client.get("/v1/accounts/acme/policies", headers=admin)).json()
    assert [p["name"] for p in listed] == ["Sandbox", "Default"]
