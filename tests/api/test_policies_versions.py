"""Policy versions through the HTTP API (§8): ETag / If-Match (or a version
field), 412 on a stale one, concurrent edits and inserts, a version bump per edit,
refused edits changing nothing, every edit audited with before and after.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from tests.conftest import create_policy
from tests.helpers import (
    ANY,
    POLICIES,
    assert_problem,
    audit_of,
    concurrently,
    fetch,
    insert,
    match,
    patch,
)

# --- ETag / If-Match ---------------------------------------------------------------------------


def _edits(policy: dict[str, Any]) -> list[tuple[str, str, Any]]:
    base = f"{POLICIES}/{policy['id']}"
    message = f"{base}/lineup/{policy['lineup'][1]['id']}"
    return [
        ("PATCH", base, {"name": "Renamed"}),
        ("DELETE", base, None),
        ("PATCH", message, {"delay": "P1D"}),
        ("DELETE", message, None),
    ]


async def test_edits_without_if_match_apply_to_whatever_is_current(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    base = f"{POLICIES}/{policy['id']}"
    message = f"{base}/lineup/{policy['lineup'][1]['id']}"
    for method, url, body in [
        ("PATCH", base, {"name": "Renamed"}),
        ("PATCH", message, {"delay": "P1D"}),
        ("DELETE", message, None),
        ("DELETE", base, None),
    ]:
        response = await client.request(method, url, headers=acme, json=body)
        assert response.status_code == 200, (method, url, response.text)
    assert (await client.get(base, headers=acme)).status_code == 404  # deleted last


async def test_a_version_field_works_as_if_match(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    url = f"{POLICIES}/{policy['id']}"
    step = f"{url}/lineup/{policy['lineup'][1]['id']}"
    stale = await client.patch(url, headers=acme, json={"name": "New", "version": 7})
    assert_problem(stale, 412, "precondition-failed")
    stale = await client.patch(step, headers=acme, json={"delay": "P1D", "version": 7})
    assert_problem(stale, 412, "precondition-failed")
    assert await fetch(client, acme, policy["id"]) == policy
    renamed = await client.patch(
        url, headers=acme, json={"name": "New", "version": policy["version"]}
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["version"]) == ("New", policy["version"] + 1)


async def test_edits_with_a_stale_etag_get_412(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    renamed = (await patch(client, acme, policy, {"name": "Fresh"})).json()
    for method, url, body in _edits(policy):
        response = await client.request(method, url, headers={**acme, **match(policy)}, json=body)
        problem = assert_problem(response, 412, "precondition-failed")
        assert problem["current_version"] == 2
    assert await fetch(client, acme, policy["id"]) == renamed

    _, url, _ = _edits(policy)[2]
    for version, (tag, delay) in enumerate(
        [('"2"', "P1D"), ('W/"3"', "P2D"), ('"1", "4"', "PT5H")], start=3
    ):
        response = await client.patch(url, headers={**acme, "If-Match": tag}, json={"delay": delay})
        assert response.status_code == 200, (tag, response.text)
        assert response.json()["version"] == version


async def test_edits_with_if_match_star_are_accepted(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    edits = _edits(policy)
    for expected, index in enumerate((0, 2, 3, 1), start=2):  # delete the policy last
        method, url, body = edits[index]
        response = await client.request(method, url, headers={**acme, **ANY}, json=body)
        assert response.status_code == 200, (method, url, response.text)
        assert response.json()["version"] == expected
        assert response.headers["ETag"] == f'"{expected}"'


async def test_concurrent_edits_with_the_same_etag_let_only_one_through(
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    request: pytest.FixtureRequest,
) -> None:
    policy = await create_policy(client, acme)
    url = f"{POLICIES}/{policy['id']}"
    responses = await concurrently(
        context,
        client.patch(url, headers={**acme, **match(policy)}, json={"name": "From A"}),
        client.patch(url, headers={**acme, **match(policy)}, json={"name": "From B"}),
    )
    assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert await fetch(client, acme, policy["id"]) == winner
    assert len(await audit_of(client, acme, policy["id"])) == 2


async def test_concurrent_inserts_keep_positions_1_to_n(
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    request: pytest.FixtureRequest,
) -> None:
    policy = await create_policy(client, acme)
    responses = await concurrently(
        context,
        insert(client, acme, policy["id"], channel="sms", delay="PT2H"),
        insert(client, acme, policy["id"], channel="email", delay="PT3H"),
    )
    accepted = [r for r in responses if r.status_code == 201]
    assert accepted, [r.text for r in responses]
    read = await fetch(client, acme, policy["id"])
    assert [m["position"] for m in read["lineup"]] == list(range(1, 4 + len(accepted)))
    assert read["version"] == 1 + len(accepted)


async def test_every_edit_bumps_the_version(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    base = f"{POLICIES}/{policy['id']}"
    steps: list[tuple[str, str, Any]] = [
        ("PATCH", base, {"name": "Renamed"}),
        ("PATCH", base, {"fatigue": {"max_invites": {"enabled": True}}}),
        ("PATCH", base, {"business_rules": {"time_zone": "Asia/Tokyo"}}),
        ("PATCH", base, {"dnd_webhooks": {"email": "https://dnd.example.com/hook"}}),
        ("POST", f"{base}/lineup", {"channel": "sms", "delay": "PT2H"}),
        ("PATCH", f"{base}/lineup/{policy['lineup'][1]['id']}", {"delay": "P1D"}),
        ("DELETE", f"{base}/lineup/{policy['lineup'][2]['id']}", None),
        ("POST", f"{base}/pause", None),
        ("POST", f"{base}/resume", None),
    ]
    version = policy["version"]
    for method, url, body in steps:
        response = await client.request(
            method, url, headers={**acme, "If-Match": f'"{version}"'}, json=body
        )
        assert response.status_code in (200, 201), (method, url, response.text)
        assert response.json()["version"] == version + 1, (method, url)
        assert response.headers["ETag"] == f'"{version + 1}"'
        version += 1
    read = await client.get(base, headers=acme)
    assert read.headers["ETag"] == f'"{version}"'
    assert read.json()["version"] == version


async def test_refused_edits_change_nothing_and_write_no_audit(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    await create_policy(client, acme, name="Taken")
    base = f"{POLICIES}/{policy['id']}"
    message = f"{base}/lineup/{policy['lineup'][1]['id']}"
    audit_before = await audit_of(client, acme, policy["id"])
    assert [a["action"] for a in audit_before] == ["policy.create"]

    current = match(policy)
    stale = {"If-Match": '"7"'}
    refused: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("PATCH", base, current, {"name": "taken"}, 409),
        ("PATCH", base, current, {"name": "New", "fatigue": {"max_invites": {"count": 0}}}, 422),
        ("PATCH", base, current, {"name": "New", "business_rules": {"time_zone": "Nowhere"}}, 422),
        ("PATCH", base, current, {"name": "New", "dnd_webhooks": {"sms": "http://10.0.0.5/"}}, 422),
        ("PATCH", base, stale, {"name": "New"}, 412),
        ("DELETE", base, stale, None, 412),
        ("POST", f"{base}/lineup", {}, {"channel": "sms", "delay": "PT0S", "position": 1}, 422),
        ("POST", f"{base}/lineup", stale, {"channel": "sms", "delay": "P1D"}, 412),
        ("PATCH", message, current, {"delay": "PT1M"}, 422),
        ("PATCH", message, stale, {"delay": "P1D"}, 412),
        ("DELETE", message, stale, None, 412),
    ]
    for method, url, extra, body, status in refused:
        response = await client.request(method, url, headers={**acme, **extra}, json=body)
        assert response.status_code == status, (method, url, body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")

    assert await fetch(client, acme, policy["id"]) == policy
    assert await audit_of(client, acme, policy["id"]) == audit_before


async def test_policy_edits_are_audited_with_before_and_after(
    client: httpx.AsyncClient, acme: dict[str, str], clock: FrozenClock
) -> None:
    policy = await create_policy(client, acme)
    clock.advance(timedelta(seconds=1))
    await patch(client, acme, policy, {"name": "Renamed"})
    latest, created = await audit_of(client, acme, policy["id"])
    assert created["action"] == "policy.create"
    assert created["before"] is None
    assert created["after"]["name"] == "Default"
    assert latest["action"] == "policy.update"
    assert (latest["before"]["name"], latest["after"]["name"]) == ("Default", "Renamed")
    assert (latest["before"]["version"], latest["after"]["version"]) == (1, 2)
    assert latest["account"] == "acme"
