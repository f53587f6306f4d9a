"""Dispatches through the HTTP API (R-DSP-1, R-DSP-2) and how policy edits pause them
(R-POL-7, R-POL-8)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from tests.conftest import create_policy, report_incident, setup_account, templates_for
from tests.helpers import (
    ANY,
    DISPATCHES,
    POLICIES,
    assert_problem,
    audit_of,
    concurrently,
    create_dispatch,
    dispatch_body,
)

# --- helpers -----------------------------------------------------------------------------


async def read_dispatch(
    client: httpx.AsyncClient, admin: dict[str, str], dispatch_id: str
) -> dict[str, Any]:
    response = await client.get(f"{DISPATCHES}/{dispatch_id}", headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def resume(
    client: httpx.AsyncClient, admin: dict[str, str], dispatch_id: str
) -> httpx.Response:
    return await client.post(f"{DISPATCHES}/{dispatch_id}/resume", headers=admin)


async def add_message(
    client: httpx.AsyncClient, admin: dict[str, str], policy_id: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"{POLICIES}/{policy_id}/lineup", headers=admin, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def state(dispatch: dict[str, Any]) -> tuple[str, str | None]:
    return dispatch["status"], dispatch["pause_reason"]


# --- create and read ---------------------------------------------------------------------------


async def test_create_read_and_list_a_dispatch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    response = await client.post(DISPATCHES, headers=acme, json=dispatch_body(policy))
    assert response.status_code == 201, response.text
    dispatch = response.json()
    assert response.headers["ETag"] == f'"{dispatch["version"]}"'
    assert response.headers["Location"] == f"{DISPATCHES}/{dispatch['id']}"
    assert dispatch["account"] == "acme"
    assert dispatch["questionnaire_id"] == "q-1"
    assert dispatch["policy_id"] == policy["id"]
    assert (dispatch["token_validity"], dispatch["token_validity_seconds"]) == ("P10D", 864_000)
    assert dispatch["message_templates"] == templates_for(policy)
    assert dispatch["missing_templates"] == []
    assert state(dispatch) == ("active", None)
    assert dispatch["paused_at"] is None

    assert await read_dispatch(client, acme, dispatch["id"]) == dispatch
    listed = (await client.get(DISPATCHES, headers=acme)).json()
    assert [d["id"] for d in listed] == [dispatch["id"]]
    missing = await client.get(f"{DISPATCHES}/dsp_nope", headers=acme)
    assert_problem(missing, 404, "not-found")


async def test_missing_template_is_refused_naming_the_message(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    templates = templates_for(policy)
    third = policy["lineup"][2]["id"]
    del templates[third]
    response = await client.post(
        DISPATCHES, headers=acme, json=dispatch_body(policy, message_templates=templates)
    )
    body = assert_problem(response, 422, "validation-error", field=f"message_templates.{third}")
    assert [e["field"] for e in body["errors"]] == [f"message_templates.{third}"]

    response = await client.post(
        DISPATCHES, headers=acme, json=dispatch_body(policy, message_templates={})
    )
    body = assert_problem(response, 422, "validation-error")
    assert sorted(e["field"] for e in body["errors"]) == sorted(
        f"message_templates.{m['id']}" for m in policy["lineup"]
    )
    assert (await client.get(DISPATCHES, headers=acme)).json() == []

    templates = {**templates_for(policy), "msg_unknown": "tpl-x"}
    response = await client.post(
        DISPATCHES, headers=acme, json=dispatch_body(policy, message_templates=templates)
    )
    assert_problem(response, 422, "validation-error", field="message_templates.msg_unknown")


async def test_validity_not_longer_than_total_delay_is_refused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)  # total delay P5D
    for validity, seconds in (("P1D", 86_400), ("PT1H", 3_600), ("P5D", 5 * 86_400)):
        response = await client.post(
            DISPATCHES, headers=acme, json=dispatch_body(policy, token_validity=validity)
        )
        body = assert_problem(response, 422, "token-validity-too-short", field="token_validity")
        assert body["token_validity_seconds"] == seconds
        assert body["total_delay_seconds"] == 5 * 86_400
        assert "longer" in body["detail"]
    assert (await client.get(DISPATCHES, headers=acme)).json() == []

    dispatch = await create_dispatch(client, acme, policy, token_validity="P5DT1S")
    assert dispatch["token_validity_seconds"] == 5 * 86_400 + 1


async def test_malformed_dispatch_bodies_are_refused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"token_validity": "P1M"}, "token_validity"),
        ({"token_validity": "ten days"}, "token_validity"),
        ({"questionnaire_id": ""}, "questionnaire_id"),
        ({"message_templates": {policy["lineup"][0]["id"]: 7}}, "message_templates"),
        ({"colour": "blue"}, "colour"),
    ]
    for overrides, field in cases:
        response = await client.post(
            DISPATCHES, headers=acme, json=dispatch_body(policy, **overrides)
        )
        body = assert_problem(response, 422, "validation-error")
        assert any(e["field"].startswith(field) for e in body["errors"]), (overrides, body)
    assert (await client.get(DISPATCHES, headers=acme)).json() == []


async def test_foreign_deleted_or_empty_policies_are_refused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    await setup_account(client, acme, "globex")
    foreign = await create_policy(client, acme, "globex")
    response = await client.post(DISPATCHES, headers=acme, json=dispatch_body(foreign))
    assert_problem(response, 422, "validation-error", field="policy_id")
    response = await client.post(
        DISPATCHES, headers=acme, json=dispatch_body(foreign, policy_id="pol_nope")
    )
    assert_problem(response, 422, "validation-error", field="policy_id")

    policy = await create_policy(client, acme)
    response = await client.delete(f"{POLICIES}/{policy['id']}", headers={**acme, **ANY})
    assert response.status_code == 200, response.text
    response = await client.post(DISPATCHES, headers=acme, json=dispatch_body(policy))
    body = assert_problem(response, 422, "validation-error", field="policy_id")
    assert "deleted" in body["errors"][0]["reason"]

    policy = await create_policy(client, acme, name="Empty", lineup=[])
    response = await client.post(DISPATCHES, headers=acme, json=dispatch_body(policy))
    assert_problem(response, 422, "validation-error", field="policy_id")


# --- policy edits pause dispatches -------------------------------------------------------------


async def test_adding_a_lineup_message_pauses_every_active_dispatch_of_the_policy(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    other = await create_policy(client, acme, name="Other")
    first = await create_dispatch(client, acme, policy)
    second = await create_dispatch(client, acme, policy, questionnaire_id="q-2")
    elsewhere = await create_dispatch(client, acme, other)

    changed = await add_message(client, acme, policy["id"], channel="sms", delay="PT2H")
    assert sorted(changed["paused_dispatches"]) == sorted([first["id"], second["id"]])
    new_id = changed["lineup"][-1]["id"]

    for dispatch_id in (first["id"], second["id"]):
        dispatch = await read_dispatch(client, acme, dispatch_id)
        assert state(dispatch) == ("paused", "lineup_changed")
        assert dispatch["missing_templates"] == [new_id]
        assert dispatch["version"] == 2
    assert state(await read_dispatch(client, acme, elsewhere["id"])) == ("active", None)

    again = await add_message(client, acme, policy["id"], channel="email", delay="PT3H")
    assert again["paused_dispatches"] == []  # already paused


async def test_resume_refused_until_the_missing_template_is_added(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    dispatch = await create_dispatch(client, acme, policy)
    changed = await add_message(client, acme, policy["id"], channel="sms", delay="PT1H", position=2)
    new_id = changed["lineup"][1]["id"]

    body = assert_problem(await resume(client, acme, dispatch["id"]), 409, "dispatch-not-resumable")
    assert body["missing_templates"] == [new_id]
    assert new_id in body["detail"]
    assert state(await read_dispatch(client, acme, dispatch["id"])) == ("paused", "lineup_changed")

    response = await client.patch(
        f"{DISPATCHES}/{dispatch['id']}",
        headers=acme,
        json={"message_templates": {new_id: "tpl-new"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["missing_templates"] == []
    assert response.json()["message_templates"][new_id] == "tpl-new"
    assert state(response.json()) == ("paused", "lineup_changed")

    response = await resume(client, acme, dispatch["id"])
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("active", None)
    assert response.json()["paused_at"] is None
    assert state(await read_dispatch(client, acme, dispatch["id"])) == ("active", None)


async def test_deleting_a_lineup_message_drops_its_template_requirement(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    dispatch = await create_dispatch(client, acme, policy)
    changed = await add_message(client, acme, policy["id"], channel="sms", delay="PT2H")
    changed = await add_message(client, acme, policy["id"], channel="sms", delay="PT3H")
    fourth, fifth = changed["lineup"][3]["id"], changed["lineup"][4]["id"]
    assert (await read_dispatch(client, acme, dispatch["id"]))["missing_templates"] == [
        fourth,
        fifth,
    ]

    response = await client.delete(
        f"{POLICIES}/{policy['id']}/lineup/{fourth}", headers={**acme, **ANY}
    )
    assert response.status_code == 200, response.text
    assert (await read_dispatch(client, acme, dispatch["id"]))["missing_templates"] == [fifth]
    body = assert_problem(await resume(client, acme, dispatch["id"]), 409, "dispatch-not-resumable")
    assert body["missing_templates"] == [fifth]

    response = await client.delete(
        f"{POLICIES}/{policy['id']}/lineup/{fifth}", headers={**acme, **ANY}
    )
    assert response.status_code == 200, response.text
    assert (await read_dispatch(client, acme, dispatch["id"]))["missing_templates"] == []
    response = await resume(client, acme, dispatch["id"])
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("active", None)


async def test_dispatch_of_a_deleted_policy_resumes_only_after_moving_to_another_policy(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    target = await create_policy(
        client, acme, name="Target", lineup=[{"channel": "sms", "delay": "P1D"}]
    )
    dispatch = await create_dispatch(client, acme, policy)
    response = await client.delete(f"{POLICIES}/{policy['id']}", headers={**acme, **ANY})
    assert response.json()["paused_dispatches"] == [dispatch["id"]]
    assert state(await read_dispatch(client, acme, dispatch["id"])) == ("paused", "policy_deleted")

    body = assert_problem(await resume(client, acme, dispatch["id"]), 409, "dispatch-not-resumable")
    assert body["field"] == "policy_id"

    response = await client.patch(
        f"{DISPATCHES}/{dispatch['id']}", headers=acme, json={"policy_id": policy["id"]}
    )
    assert_problem(response, 422, "validation-error", field="policy_id")

    response = await client.patch(
        f"{DISPATCHES}/{dispatch['id']}",
        headers=acme,
        json={"policy_id": target["id"], "message_templates": templates_for(target)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["policy_id"] == target["id"]
    assert response.json()["missing_templates"] == []
    assert state(response.json()) == ("paused", "policy_deleted")

    response = await resume(client, acme, dispatch["id"])
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("active", None)
    assert response.json()["policy_id"] == target["id"]


async def test_moving_to_a_policy_without_templates_keeps_resume_refused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    target = await create_policy(client, acme, name="Target")
    dispatch = await create_dispatch(client, acme, policy)
    await client.delete(f"{POLICIES}/{policy['id']}", headers={**acme, **ANY})
    response = await client.patch(
        f"{DISPATCHES}/{dispatch['id']}", headers=acme, json={"policy_id": target["id"]}
    )
    assert response.status_code == 200, response.text
    expected = [m["id"] for m in target["lineup"]]
    assert response.json()["missing_templates"] == expected
    body = assert_problem(await resume(client, acme, dispatch["id"]), 409, "dispatch-not-resumable")
    assert body["missing_templates"] == expected


async def test_lengthening_a_delay_past_the_validity_pauses_the_dispatch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)  # total P5D
    short = await create_dispatch(client, acme, policy, token_validity="P6D")
    long = await create_dispatch(client, acme, policy, token_validity="P20D")
    url = f"{POLICIES}/{policy['id']}/lineup/{policy['lineup'][2]['id']}"

    response = await client.patch(url, headers={**acme, **ANY}, json={"delay": "P3DT12H"})
    assert response.status_code == 200, response.text
    assert response.json()["paused_dispatches"] == []  # P5DT12H still < P6D

    response = await client.patch(url, headers={**acme, **ANY}, json={"delay": "P4D"})
    assert response.status_code == 200, response.text  # total P6D == validity
    assert response.json()["paused_dispatches"] == [short["id"]]
    assert state(await read_dispatch(client, acme, short["id"])) == ("paused", "validity_too_short")
    assert state(await read_dispatch(client, acme, long["id"])) == ("active", None)

    body = assert_problem(await resume(client, acme, short["id"]), 409, "dispatch-not-resumable")
    assert body["token_validity_seconds"] == 6 * 86_400
    assert body["total_delay_seconds"] == 6 * 86_400

    # A validity long enough again lifts the engine's own pause: no resume call needed.
    response = await client.patch(
        f"{DISPATCHES}/{short['id']}", headers=acme, json={"token_validity": "P7D"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_validity"] == "P7D"
    assert state(response.json()) == ("active", None)
    assert state(await read_dispatch(client, acme, short["id"])) == ("active", None)

    # An operator's pause is not lifted by a validity change.
    response = await client.post(f"{DISPATCHES}/{long['id']}/pause", headers=acme)
    assert response.status_code == 200, response.text
    response = await client.patch(
        f"{DISPATCHES}/{long['id']}", headers=acme, json={"token_validity": "P21D"}
    )
    assert response.status_code == 200, response.text
    assert state(response.json())[0] == "paused"


async def test_active_dispatch_cannot_be_patched_into_a_too_short_validity(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    dispatch = await create_dispatch(client, acme, policy)
    response = await client.patch(
        f"{DISPATCHES}/{dispatch['id']}", headers=acme, json={"token_validity": "P5D"}
    )
    assert_problem(response, 422, "token-validity-too-short", field="token_validity")
    response = await client.patch(
        f"{DISPATCHES}/{dispatch['id']}",
        headers=acme,
        json={"message_templates": {policy["lineup"][0]["id"]: None}},
    )
    assert_problem(
        response, 422, "validation-error", field=f"message_templates.{policy['lineup'][0]['id']}"
    )
    assert await read_dispatch(client, acme, dispatch["id"]) == dispatch


# --- pause / resume ----------------------------------------------------------------------------


async def test_pause_and_resume_with_a_reason_affect_only_that_dispatch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    target = await create_dispatch(client, acme, policy)
    bystander = await create_dispatch(client, acme, policy, questionnaire_id="q-2")

    response = await client.post(
        f"{DISPATCHES}/{target['id']}/pause", headers=acme, json={"reason": "vendor outage"}
    )
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("paused", "vendor outage")
    assert response.json()["paused_at"] is not None
    assert state(await read_dispatch(client, acme, bystander["id"])) == ("active", None)

    response = await client.post(
        f"{DISPATCHES}/{target['id']}/resume", headers=acme, json={"reason": "vendor back"}
    )
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("active", None)
    assert state(await read_dispatch(client, acme, bystander["id"])) == ("active", None)


async def test_pause_without_a_body_uses_a_manual_reason(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    dispatch = await create_dispatch(client, acme, policy)
    response = await client.post(f"{DISPATCHES}/{dispatch['id']}/pause", headers=acme)
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("paused", "manual")
    response = await resume(client, acme, dispatch["id"])
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("active", None)
    response = await resume(client, acme, dispatch["id"])  # already active: harmless
    assert response.status_code == 200, response.text
    assert state(response.json()) == ("active", None)

    dispatch = await create_dispatch(client, acme, policy)
    response = await client.post(
        f"{DISPATCHES}/{dispatch['id']}/pause", headers=acme, json={"why": "x"}
    )
    assert_problem(response, 422, "validation-error", field="why")
    assert state(await read_dispatch(client, acme, dispatch["id"])) == ("active", None)


async def test_create_pause_and_resume_are_audited_with_before_and_after(
    client: httpx.AsyncClient, acme: dict[str, str], clock: FrozenClock
) -> None:
    policy = await create_policy(client, acme)
    dispatch = await create_dispatch(client, acme, policy)
    clock.advance(timedelta(seconds=1))
    await client.post(
        f"{DISPATCHES}/{dispatch['id']}/pause", headers=acme, json={"reason": "checking"}
    )
    clock.advance(timedelta(seconds=1))
    await resume(client, acme, dispatch["id"])

    resumed, paused, created = await audit_of(client, acme, dispatch["id"])
    assert created["action"] == "dispatch.create"
    assert created["target_type"] == "dispatch"
    assert created["account"] == "acme"
    assert created["before"] is None
    assert created["after"]["policy_id"] == policy["id"]
    assert created["after"]["status"] == "active"

    assert paused["action"] == "dispatch.pause"
    assert paused["before"] == {"status": "active", "pause_reason": None}
    assert paused["after"] == {"status": "paused", "pause_reason": "checking"}

    assert resumed["action"] == "dispatch.resume"
    assert resumed["before"] == {"status": "paused", "pause_reason": "checking"}
    assert resumed["after"] == {"status": "active", "pause_reason": None}

    dispatch = await create_dispatch(client, acme, policy)
    unknown = await client.post(
        f"{DISPATCHES}/{dispatch['id']}/pause", headers=acme, json={"incident": "inc_nope"}
    )
    assert_problem(unknown, 422, "validation-error", field="incident")
    assert state(await read_dispatch(client, acme, dispatch["id"])) == ("active", None)
    incident = await report_incident(client, acme)
    response = await client.post(
        f"{DISPATCHES}/{dispatch['id']}/pause",
        headers=acme,
        json={"reason": "incident", "incident": incident},
    )
    assert response.status_code == 200, response.text
    paused = next(
        a for a in await audit_of(client, acme, dispatch["id"]) if a["action"] == "dispatch.pause"
    )
    assert paused["incident"] == incident


async def test_refused_resume_writes_no_audit_record(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    dispatch = await create_dispatch(client, acme, policy)
    await add_message(client, acme, policy["id"], channel="sms", delay="PT2H")
    before = await audit_of(client, acme, dispatch["id"])
    assert_problem(await resume(client, acme, dispatch["id"]), 409, "dispatch-not-resumable")
    assert await audit_of(client, acme, dispatch["id"]) == before


async def test_patch_dispatch_honours_if_match_and_is_audited(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    dispatch = await create_dispatch(client, acme, policy)
    url = f"{DISPATCHES}/{dispatch['id']}"
    response = await client.patch(
        url, headers={**acme, "If-Match": '"9"'}, json={"token_validity": "P20D"}
    )
    assert_problem(response, 412, "precondition-failed")
    response = await client.patch(
        url, headers={**acme, "If-Match": '"1"'}, json={"token_validity": "P20D"}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["version"], response.headers["ETag"]) == (2, '"2"')
    update = next(
        a for a in await audit_of(client, acme, dispatch["id"]) if a["action"] == "dispatch.update"
    )
    assert update["before"]["token_validity"] == "P10D"
    assert update["after"]["token_validity"] == "P20D"
    for unchanged in ({}, {"token_validity": "P20D"}, {"policy_id": policy["id"]}):
        response = await client.patch(url, headers=acme, json=unchanged)
        assert response.status_code == 200, response.text
        assert (response.json()["version"], response.headers["ETag"]) == (2, '"2"'), unchanged


async def test_dispatch_created_while_a_message_is_added_is_not_left_active_without_template(
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    request: pytest.FixtureRequest,
) -> None:
    policy = await create_policy(client, acme)
    created, inserted = await concurrently(
        context,
        client.post(DISPATCHES, headers=acme, json=dispatch_body(policy)),
        client.post(
            f"{POLICIES}/{policy['id']}/lineup",
            headers=acme,
            json={"channel": "sms", "delay": "PT2H"},
        ),
    )
    assert inserted.status_code == 201, inserted.text
    if created.status_code != 201:
        assert_problem(created, 422, "validation-error")
        return
    dispatch = await read_dispatch(client, acme, created.json()["id"])
    assert dispatch["missing_templates"] == [inserted.json()["lineup"][-1]["id"]]
    assert state(dispatch) == ("paused", "lineup_changed")


async def test_created_resources_say_where_they_live(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = [
        await client.post("/v1/accounts", headers=admin, json={"id": "loc", "name": "L"}),
    ]
    await client.put("/v1/accounts/loc/queue-integration", headers=admin, json={"kind": "local"})
    created.append(
        await client.post(
            "/v1/accounts/loc/policies",
            headers=admin,
            json={"name": "P", "lineup": [{"channel": "email", "delay": "PT0S"}]},
        )
    )
    policy = created[-1].json()
    created.append(
        await client.post("/v1/accounts/loc/dispatches", headers=admin, json=dispatch_body(policy))
    )
    created.append(
        await client.post(
            "/v1/incidents", headers=admin, json={"title": "Down", "service": "relay"}
        )
    )
    for response in created:
        assert response.status_code == 201, response.text
        followed = await client.get(response.headers["Location"], headers=admin)
        assert followed.status_code == 200, response.headers["Location"]
        assert followed.json()["id"] == response.json()["id"]
