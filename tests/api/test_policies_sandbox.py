"""Copy to sandbox (R-POL-6, §8): settings and lineup copied onto the account's sandbox
policy, the source left alone, sandbox dispatches paused.
"""

from __future__ import annotations

import httpx

from tests.conftest import create_policy
from tests.helpers import POLICIES, create_dispatch, fetch, shape

# --- copy to sandbox ---------------------------------------------------------------------------


async def test_copy_to_sandbox_copies_settings_and_leaves_the_source_alone(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    source = await create_policy(
        client,
        acme,
        name="Real",
        fatigue={"max_invites": {"enabled": True, "count": 4, "days": 10, "scope": "all"}},
        business_rules={
            "time_zone": "Europe/Berlin",
            "days": {"sat": [{"start": "08:00", "end": "12:00"}]},
        },
        dnd_webhooks={"sms": "https://dnd.example.com/hook"},
    )
    sandbox_before = (await client.get(POLICIES, headers=acme)).json()[0]

    response = await client.post(f"{POLICIES}/{source['id']}/copy-to-sandbox", headers=acme)
    assert response.status_code == 200, response.text
    sandbox = response.json()
    assert sandbox["id"] == sandbox_before["id"]
    assert (sandbox["sandbox"], sandbox["name"]) == (True, "Sandbox")
    assert sandbox["version"] == sandbox_before["version"] + 1
    assert shape(sandbox) == shape(source)
    assert [m["checks"] for m in sandbox["lineup"]] == [m["checks"] for m in source["lineup"]]
    assert not {m["id"] for m in sandbox["lineup"]} & {m["id"] for m in source["lineup"]}
    for key in ("fatigue", "business_rules", "dnd_webhooks", "total_delay"):
        assert sandbox[key] == source[key], key
    assert sandbox["paused_dispatches"] == []

    assert await fetch(client, acme, source["id"]) == source
    assert (await fetch(client, acme, sandbox["id"]))["lineup"] == sandbox["lineup"]


async def test_copy_to_sandbox_replaces_the_lineup_and_pauses_sandbox_dispatches(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    first = await create_policy(client, acme, name="First")
    second = await create_policy(
        client, acme, name="Second", lineup=[{"channel": "sms", "delay": "P1D"}]
    )
    sandbox = (await client.post(f"{POLICIES}/{first['id']}/copy-to-sandbox", headers=acme)).json()
    dispatch = await create_dispatch(client, acme, sandbox, token_validity="P40D")
    real = await create_dispatch(client, acme, first, token_validity="P40D")

    response = await client.post(f"{POLICIES}/{second['id']}/copy-to-sandbox", headers=acme)
    assert response.status_code == 200, response.text
    assert shape(response.json()) == [(1, "sms", "P1D")]
    assert response.json()["paused_dispatches"] == [dispatch["id"]]

    paused = (
        await client.get(f"/v1/accounts/acme/dispatches/{dispatch['id']}", headers=acme)
    ).json()
    assert (paused["status"], paused["pause_reason"]) == ("paused", "lineup_changed")
    assert paused["missing_templates"] == [response.json()["lineup"][0]["id"]]
    other = (await client.get(f"/v1/accounts/acme/dispatches/{real['id']}", headers=acme)).json()
    assert other["status"] == "active"
