"""Delivery Policies through the HTTP API (§8; pauses R-POL-8): create (only with a queue
integration), documented defaults, list and read, unique names, rename, soft delete,
pause and resume with a reason and an incident in the audit.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from dispatch_engine.clock import FrozenClock
from tests.conftest import create_policy, report_incident, setup_account
from tests.helpers import (
    ANY,
    POLICIES,
    assert_problem,
    audit_of,
    create_dispatch,
    fetch,
    match,
    patch,
)

# --- create, list, read, rename, delete ------------------------------------------------------


async def test_create_policy_needs_a_queue_integration(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await setup_account(client, admin, queue=False)
    response = await client.post(POLICIES, headers=admin, json={"name": "Default"})
    body = assert_problem(response, 409, "queue-integration-required")
    assert "queue-integration" in body["detail"]
    listed = (await client.get(POLICIES, headers=admin)).json()
    assert [p["name"] for p in listed] == ["Sandbox"]


async def test_new_policy_has_documented_defaults(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme, lineup=[])
    assert policy["status"] == "active"
    assert policy["sandbox"] is False
    assert policy["version"] == 1
    assert policy["lineup"] == []
    assert policy["total_delay"] == "PT0S"
    assert policy["fatigue"] == {
        "uuid_field": "email",
        "pending_token": {"enabled": True},
        "max_invites": {"enabled": False, "count": 3, "days": 30, "scope": "questionnaire"},
    }
    all_day = [{"start": "00:00", "end": "24:00"}]
    assert policy["business_rules"] == {
        "time_zone": "UTC",
        "days": {day: all_day for day in ("mon", "tue", "wed", "thu", "fri")},
        "use_contact_time_zone": False,
        "min_validity_left": "PT1H",
    }
    assert policy["dnd_webhooks"] == {}
    assert "paused_dispatches" not in policy


async def test_list_puts_sandbox_first_and_read_returns_etag(
    client: httpx.AsyncClient, acme: dict[str, str], clock: FrozenClock
) -> None:
    first = await create_policy(client, acme, name="Zulu")
    clock.advance(timedelta(minutes=1))
    second = await create_policy(client, acme, name="Alpha")
    listed = (await client.get(POLICIES, headers=acme)).json()
    assert [p["name"] for p in listed] == ["Sandbox", "Zulu", "Alpha"]
    assert [p["sandbox"] for p in listed] == [True, False, False]

    response = await client.get(f"{POLICIES}/{second['id']}", headers=acme)
    assert response.status_code == 200
    assert response.headers["ETag"] == '"1"'
    read = response.json()
    assert read == second
    assert listed[1]["id"] == first["id"]

    missing = await client.get(f"{POLICIES}/pol_nope", headers=acme)
    assert_problem(missing, 404, "not-found")

    await setup_account(client, acme, "globex")
    other = await create_policy(client, acme, "globex")
    response = await client.get(f"{POLICIES}/{other['id']}", headers=acme)
    assert_problem(response, 404, "not-found")


async def test_names_are_unique_per_account_case_insensitively(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    await create_policy(client, acme, name="Weekly")
    response = await client.post(POLICIES, headers=acme, json={"name": "WEEKLY"})
    assert_problem(response, 409, "policy-name-taken", field="name")
    response = await client.post(POLICIES, headers=acme, json={"name": "sandbox"})
    assert_problem(response, 409, "policy-name-taken", field="name")
    await create_policy(client, acme, name="Straße")
    response = await client.post(POLICIES, headers=acme, json={"name": "STRASSE"})
    assert_problem(response, 409, "policy-name-taken", field="name")

    other = await create_policy(client, acme, name="Monthly")
    response = await patch(client, acme, other, {"name": "weekly"})
    assert_problem(response, 409, "policy-name-taken", field="name")

    await setup_account(client, acme, "globex")
    await create_policy(client, acme, "globex", name="Weekly")  # other account: fine


async def test_rename_changes_name_and_version(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme, name="Weekly")
    response = await patch(client, acme, policy, {"name": "Weekly reminders"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Weekly reminders"
    assert response.json()["version"] == 2
    assert response.headers["ETag"] == '"2"'
    renamed = response.json()

    response = await patch(client, acme, renamed, {"name": "WEEKLY REMINDERS"})
    assert response.status_code == 200, response.text  # its own name in another case
    assert (await fetch(client, acme, policy["id"]))["name"] == "WEEKLY REMINDERS"


async def test_deleted_policy_name_can_be_reused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    old = await create_policy(client, acme, name="Weekly")
    response = await client.delete(f"{POLICIES}/{old['id']}", headers={**acme, **match(old)})
    assert response.status_code == 200, response.text
    new = await create_policy(client, acme, name="weekly")
    assert new["id"] != old["id"]
    listed = (await client.get(POLICIES, headers=acme)).json()
    assert [p["name"] for p in listed] == ["Sandbox", "weekly"]


async def test_delete_is_soft_and_pauses_the_policy_dispatches(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    keep = await create_policy(client, acme, name="Keep")
    first = await create_dispatch(client, acme, policy, token_validity="P40D")
    second = await create_dispatch(client, acme, policy, token_validity="P40D")
    untouched = await create_dispatch(client, acme, keep, token_validity="P40D")

    response = await client.delete(f"{POLICIES}/{policy['id']}", headers={**acme, **ANY})
    assert response.status_code == 200, response.text
    assert sorted(response.json()["paused_dispatches"]) == sorted([first["id"], second["id"]])

    assert_problem(await client.get(f"{POLICIES}/{policy['id']}", headers=acme), 404, "not-found")
    listed = (await client.get(POLICIES, headers=acme)).json()
    assert policy["id"] not in [p["id"] for p in listed]
    again = await client.delete(f"{POLICIES}/{policy['id']}", headers={**acme, **ANY})
    assert_problem(again, 404, "not-found")

    for dispatch_id in (first["id"], second["id"]):
        dispatch = (
            await client.get(f"/v1/accounts/acme/dispatches/{dispatch_id}", headers=acme)
        ).json()
        assert (dispatch["status"], dispatch["pause_reason"]) == ("paused", "policy_deleted")
    other = (
        await client.get(f"/v1/accounts/acme/dispatches/{untouched['id']}", headers=acme)
    ).json()
    assert other["status"] == "active"

    audit = {a["action"]: a for a in await audit_of(client, acme, policy["id"])}
    assert audit["policy.delete"]["before"]["name"] == "Default"
    assert audit["policy.delete"]["after"]["deleted"] is True
    assert sorted(audit["policy.delete"]["after"]["paused_dispatches"]) == sorted(
        [first["id"], second["id"]]
    )


async def test_sandbox_cannot_be_deleted_or_copied_onto_itself(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    sandbox = (await client.get(POLICIES, headers=acme)).json()[0]
    response = await client.delete(f"{POLICIES}/{sandbox['id']}", headers={**acme, **ANY})
    assert_problem(response, 409, "sandbox-not-deletable")
    assert (await fetch(client, acme, sandbox["id"]))["version"] == sandbox["version"]

    response = await client.post(f"{POLICIES}/{sandbox['id']}/copy-to-sandbox", headers=acme)
    assert_problem(response, 409, "already-sandbox")


async def test_pause_and_resume_set_the_status(
    client: httpx.AsyncClient, acme: dict[str, str], clock: FrozenClock
) -> None:
    policy = await create_policy(client, acme)
    clock.advance(timedelta(seconds=1))
    response = await client.post(f"{POLICIES}/{policy['id']}/pause", headers=acme)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "paused"
    assert (await fetch(client, acme, policy["id"]))["status"] == "paused"

    clock.advance(timedelta(seconds=1))
    response = await client.post(f"{POLICIES}/{policy['id']}/resume", headers=acme)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    assert response.json()["version"] == 3
    resumed, paused, _ = await audit_of(client, acme, policy["id"])
    assert (paused["action"], paused["before"], paused["after"]) == (
        "policy.pause",
        {"status": "active"},
        {"status": "paused"},
    )
    assert (resumed["action"], resumed["before"], resumed["after"]) == (
        "policy.resume",
        {"status": "paused"},
        {"status": "active"},
    )


async def test_pause_and_resume_carry_a_reason_and_incident_reference_to_the_audit(
    client: httpx.AsyncClient, acme: dict[str, str], clock: FrozenClock
) -> None:
    policy = await create_policy(client, acme)
    incident = await report_incident(client, acme)
    unknown = await client.post(
        f"{POLICIES}/{policy['id']}/pause", headers=acme, json={"incident": "INC-42"}
    )
    assert_problem(unknown, 422, "validation-error", field="incident")
    clock.advance(timedelta(seconds=1))
    body = {"reason": "vendor outage", "incident": incident}
    response = await client.post(f"{POLICIES}/{policy['id']}/pause", headers=acme, json=body)
    assert response.status_code == 200, response.text
    clock.advance(timedelta(seconds=1))
    response = await client.post(
        f"{POLICIES}/{policy['id']}/resume", headers=acme, json={"incident": incident}
    )
    assert response.status_code == 200, response.text
    resumed, paused, _ = await audit_of(client, acme, policy["id"])
    assert (paused["incident"], paused["after"]) == (
        incident,
        {"status": "paused", "reason": "vendor outage"},
    )
    assert (resumed["incident"], resumed["after"]) == (incident, {"status": "active"})

    bad = await client.post(f"{POLICIES}/{policy['id']}/pause", headers=acme, json={"reason": 5})
    assert_problem(bad, 422, "validation-error", field="reason")
    assert (await fetch(client, acme, policy["id"]))["status"] == "active"
