"""Policy versions (issue 22, item 1): every change of a policy keeps an immutable
version; `…/versions` lists them newest first, `…/versions/{n}` shows one with its diff
against n-1. A refused edit keeps none; another account's policy is 404."""

from __future__ import annotations

from typing import Any

import httpx

from dispatch_engine.context import AppContext
from tests.conftest import bearer, create_policy, new_key, setup_account
from tests.helpers import POLICIES, assert_problem, audit_of, fetch, insert, match, patch


async def _versions(
    client: httpx.AsyncClient, headers: dict[str, str], policy_id: str, **params: Any
) -> httpx.Response:
    return await client.get(f"{POLICIES}/{policy_id}/versions", headers=headers, params=params)


async def _listed(
    client: httpx.AsyncClient, headers: dict[str, str], policy_id: str
) -> list[dict[str, Any]]:
    response = await _versions(client, headers, policy_id)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


async def _version(
    client: httpx.AsyncClient, headers: dict[str, str], policy_id: str, number: int
) -> dict[str, Any]:
    response = await client.get(f"{POLICIES}/{policy_id}/versions/{number}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _paths(version: dict[str, Any]) -> list[str]:
    return [change["path"] for change in version["diff"]]


async def test_creation_is_version_1_with_the_settings_and_no_diff(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    [listed] = await _listed(client, acme, policy["id"])
    [audit] = [
        a for a in await audit_of(client, acme, policy["id"]) if a["action"] == "policy.create"
    ]
    assert listed == {
        "number": 1,
        "created_at": listed["created_at"],
        "key_id": audit["key_id"],
        "change": "policy.create",
    }
    assert listed["key_id"]
    version = await _version(client, acme, policy["id"], 1)
    assert version["diff"] is None
    snapshot = version["snapshot"]
    assert snapshot["name"] == "Default" and snapshot["status"] == "active"
    assert snapshot["deleted"] is False and snapshot["sandbox"] is False
    assert snapshot["fatigue"] == policy["fatigue"]
    assert snapshot["business_rules"] == policy["business_rules"]
    assert snapshot["lineup"] == [
        {"id": m["id"], "position": m["position"], "channel": m["channel"], "delay": m["delay"]}
        for m in policy["lineup"]
    ]


async def test_a_business_rules_edit_is_version_2_whose_diff_names_exactly_what_changed(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    days = dict(policy["business_rules"]["days"])
    days["mon"] = [{"start": "08:00", "end": "17:00"}]
    response = await patch(
        client, acme, policy, {"business_rules": {"days": days, "time_zone": "Europe/Paris"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    version = await _version(client, acme, policy["id"], 2)
    assert version["change"] == "policy.update"
    assert version["diff"] == [
        {
            "path": "/business_rules/days/mon/0/end",
            "before": "24:00",
            "after": "17:00",
        },
        {
            "path": "/business_rules/days/mon/0/start",
            "before": "00:00",
            "after": "08:00",
        },
        {"path": "/business_rules/time_zone", "before": "UTC", "after": "Europe/Paris"},
    ]
    assert version["snapshot"]["business_rules"] == response.json()["business_rules"]
    assert [v["number"] for v in await _listed(client, acme, policy["id"])] == [2, 1]


async def test_every_lineup_edit_and_pause_resume_make_a_version(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    base = f"{POLICIES}/{policy['id']}"
    second, third = policy["lineup"][1]["id"], policy["lineup"][2]["id"]

    added = await insert(client, acme, policy["id"], channel="sms", delay="P1D")
    assert added.status_code == 201, added.text
    new_id = added.json()["lineup"][3]["id"]
    edited = await client.patch(f"{base}/lineup/{second}", headers=acme, json={"delay": "P4D"})
    assert edited.status_code == 200, edited.text
    deleted = await client.delete(f"{base}/lineup/{third}", headers=acme)
    assert deleted.status_code == 200, deleted.text
    for action in ("pause", "pause", "resume"):  # pausing a paused one changes nothing
        response = await client.post(f"{base}/{action}", headers=acme)
        assert response.status_code == 200, response.text

    current = await fetch(client, acme, policy["id"])
    assert current["version"] == 6
    listed = await _listed(client, acme, policy["id"])
    assert [(v["number"], v["change"]) for v in listed] == [
        (6, "policy.resume"),
        (5, "policy.pause"),
        (4, "policy.lineup.delete"),
        (3, "policy.lineup.update"),
        (2, "policy.lineup.insert"),
        (1, "policy.create"),
    ]
    insert_version = await _version(client, acme, policy["id"], 2)
    assert insert_version["diff"] == [
        {
            "path": "/lineup/3",
            "before": None,
            "after": {"id": new_id, "position": 4, "channel": "sms", "delay": "P1D"},
        }
    ]
    assert (await _version(client, acme, policy["id"], 3))["diff"] == [
        {"path": "/lineup/1/delay", "before": "P2D", "after": "P4D"}
    ]
    delete_paths = _paths(await _version(client, acme, policy["id"], 4))
    assert delete_paths[-1] == "/lineup/3" and all(
        p.startswith("/lineup/2/") for p in delete_paths[:-1]
    )
    assert (await _version(client, acme, policy["id"], 5))["diff"] == [
        {"path": "/status", "before": "active", "after": "paused"}
    ]
    latest = await _version(client, acme, policy["id"], 6)
    assert latest["snapshot"]["lineup"] == [
        {"id": m["id"], "position": m["position"], "channel": m["channel"], "delay": m["delay"]}
        for m in current["lineup"]
    ]


async def test_refused_edits_make_no_version(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    base = f"{POLICIES}/{policy['id']}"
    stale = {**acme, "If-Match": '"7"'}
    assert_problem(
        await client.patch(base, headers=stale, json={"name": "X"}), 412, "precondition-failed"
    )
    response = await client.patch(base, headers=acme, json={"name": "Y", "version": 9})
    assert response.status_code == 412
    response = await client.post(
        f"{base}/lineup", headers=stale, json={"channel": "sms", "delay": "P1D"}
    )
    assert response.status_code == 412
    # invalid: the business rules do not validate
    response = await patch(client, acme, policy, {"business_rules": {"time_zone": "Mars/Base"}})
    assert response.status_code == 422, response.text
    assert [v["number"] for v in await _listed(client, acme, policy["id"])] == [1]
    assert (await fetch(client, acme, policy["id"]))["version"] == 1


async def test_versions_page_newest_first_and_unknown_numbers_are_404(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    for index in range(4):
        current = await fetch(client, acme, policy["id"])
        response = await patch(client, acme, current, {"name": f"Name {index}"})
        assert response.status_code == 200, response.text
    first = await _versions(client, acme, policy["id"], limit=2)
    assert [v["number"] for v in first.json()] == [5, 4]
    cursor = first.headers["X-Next-Cursor"]
    second = await _versions(client, acme, policy["id"], limit=2, cursor=cursor)
    assert [v["number"] for v in second.json()] == [3, 2]
    third = await _versions(
        client, acme, policy["id"], limit=2, cursor=second.headers["X-Next-Cursor"]
    )
    assert [v["number"] for v in third.json()] == [1]
    assert "X-Next-Cursor" not in third.headers
    assert (await _version(client, acme, policy["id"], 3))["diff"] == [
        {"path": "/name", "before": "Name 0", "after": "Name 1"}
    ]
    for number in (6, 999):
        response = await client.get(f"{POLICIES}/{policy['id']}/versions/{number}", headers=acme)
        assert_problem(response, 404, "not-found")
    response = await client.get(f"{POLICIES}/{policy['id']}/versions/0", headers=acme)
    assert response.status_code == 422


async def test_another_accounts_policy_and_deleted_policies_are_404(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    policy = await create_policy(client, acme)
    await setup_account(client, acme, "globex")
    globex_key = bearer(await new_key(context, "backend", "globex"))
    other = await client.get(
        f"/v1/accounts/globex/policies/{policy['id']}/versions", headers=globex_key
    )
    assert_problem(other, 404, "not-found")
    other = await client.get(
        f"/v1/accounts/globex/policies/{policy['id']}/versions/1", headers=globex_key
    )
    assert_problem(other, 404, "not-found")
    response = await client.get(f"{POLICIES}/{policy['id']}/versions", headers=globex_key)
    assert response.status_code in (403, 404)
    # an operator key reads them, as it reads policies
    operator = bearer(await new_key(context, "operator"))
    assert [v["number"] for v in await _listed(client, operator, policy["id"])] == [1]
    deleted = await client.delete(f"{POLICIES}/{policy['id']}", headers=match(policy, **acme))
    assert deleted.status_code == 200, deleted.text
    assert_problem(await _versions(client, acme, policy["id"]), 404, "not-found")


async def test_the_sandbox_has_version_1_and_a_copy_makes_its_next(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    sandbox = (await client.get(POLICIES, headers=acme)).json()[0]
    assert sandbox["sandbox"] is True
    [first] = await _listed(client, acme, sandbox["id"])
    assert (first["number"], first["change"]) == (1, "account.create")
    policy = await create_policy(client, acme)
    copied = await client.post(f"{POLICIES}/{policy['id']}/copy-to-sandbox", headers=acme)
    assert copied.status_code == 200, copied.text
    version = await _version(client, acme, sandbox["id"], 2)
    assert version["change"] == "policy.copy_to_sandbox"
    assert [m["delay"] for m in version["snapshot"]["lineup"]] == ["PT0S", "P2D", "P3D"]
    assert {c["path"] for c in version["diff"]} == {"/lineup/0", "/lineup/1", "/lineup/2"}


async def test_dnd_webhook_query_values_never_reach_a_version(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(
        client,
        acme,
        dnd_webhooks={"email": "https://dnd.example.com/check?token=s3cr3t&list=7"},
    )
    response = await patch(
        client, acme, policy, {"dnd_webhooks": {"sms": "https://dnd.example.com/sms?key=hunter2"}}
    )
    assert response.status_code == 200, response.text
    listed = await _versions(client, acme, policy["id"])
    one = await _version(client, acme, policy["id"], 1)
    two = await _version(client, acme, policy["id"], 2)
    text = listed.text + str(one) + str(two)
    assert "s3cr3t" not in text and "hunter2" not in text
    assert one["snapshot"]["dnd_webhooks"] == {
        "email": "https://dnd.example.com/check?token=***&list=***"
    }
    assert (await _version(client, acme, policy["id"], 2))["diff"] == [
        {
            "path": "/dnd_webhooks/sms",
            "before": None,
            "after": "https://dnd.example.com/sms?key=***",
        }
    ]
