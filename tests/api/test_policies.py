"""Delivery Policies through the HTTP API (R-POL-1..8, §8), plus pure property tests of the
lineup and duration rules they rely on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from dispatch_engine import models
from dispatch_engine.api.app import create_app
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext, build_context
from dispatch_engine.rules.lineup import DAY, HOUR, delay_problems, validity_problem
from dispatch_engine.schemas.durations import format_duration, parse_duration
from tests.conftest import (
    create_policy,
    make_settings,
    report_incident,
    setup_account,
)
from tests.helpers import ANY, POLICIES, assert_problem, audit_of, create_dispatch

PROBLEM = "urn:dispatch-engine:problem:"


# --- helpers -----------------------------------------------------------------------------


def match(policy: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"If-Match": f'"{policy["version"]}"', **extra}


async def fetch(client: httpx.AsyncClient, admin: dict[str, str], policy_id: str) -> dict[str, Any]:
    response = await client.get(f"{POLICIES}/{policy_id}", headers=admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def patch(
    client: httpx.AsyncClient, admin: dict[str, str], policy: dict[str, Any], body: Any
) -> httpx.Response:
    return await client.patch(
        f"{POLICIES}/{policy['id']}", headers={**admin, **match(policy)}, json=body
    )


async def insert(
    client: httpx.AsyncClient, admin: dict[str, str], policy_id: str, **body: Any
) -> httpx.Response:
    return await client.post(f"{POLICIES}/{policy_id}/lineup", headers=admin, json=body)


def shape(policy: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(m["position"], m["channel"], m["delay"]) for m in policy["lineup"]]


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


# --- lineup ----------------------------------------------------------------------------------


async def test_insert_appends_by_default(client: httpx.AsyncClient, acme: dict[str, str]) -> None:
    policy = await create_policy(client, acme)
    response = await insert(client, acme, policy["id"], channel="sms", delay="PT1H")
    assert response.status_code == 201, response.text
    body = response.json()
    assert shape(body) == [
        (1, "email", "PT0S"),
        (2, "email", "P2D"),
        (3, "sms", "P3D"),
        (4, "sms", "PT1H"),
    ]
    new_id = body["lineup"][3]["id"]
    assert new_id not in {m["id"] for m in policy["lineup"]}
    assert response.headers["Location"].endswith(f"/lineup/{new_id}")
    assert body["paused_dispatches"] == []
    assert body["total_delay"] == "P5DT1H"

    response = await insert(client, acme, policy["id"], channel="sms", delay="P1D", position=0)
    assert_problem(response, 422, "validation-error", field="position")
    response = await insert(client, acme, policy["id"], channel="sms", delay="P1D", position=6)
    body = assert_problem(response, 422, "validation-error", field="position")
    assert "between 1 and 5" in body["reason"]


async def test_insert_at_position_one_shifts_the_others(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(
        client,
        acme,
        lineup=[{"channel": "email", "delay": "P1D"}, {"channel": "sms", "delay": "P2D"}],
    )
    response = await insert(client, acme, policy["id"], channel="sms", delay="PT0S", position=1)
    assert response.status_code == 201, response.text
    body = response.json()
    assert shape(body) == [(1, "sms", "PT0S"), (2, "email", "P1D"), (3, "sms", "P2D")]
    assert [m["id"] for m in body["lineup"][1:]] == [m["id"] for m in policy["lineup"]]

    response = await insert(client, acme, policy["id"], channel="email", delay="P1W", position=3)
    assert response.status_code == 201, response.text
    body = response.json()
    assert [m["position"] for m in body["lineup"]] == [1, 2, 3, 4]
    assert shape(body)[2] == (3, "email", "P7D")
    assert body["lineup"][2]["delay_seconds"] == 7 * DAY
    assert body == {**(await fetch(client, acme, policy["id"])), "paused_dispatches": []}


async def test_edit_delay_and_channel_of_a_message(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    second = policy["lineup"][1]
    response = await client.patch(
        f"{POLICIES}/{policy['id']}/lineup/{second['id']}",
        headers={**acme, **match(policy)},
        json={"channel": "sms", "delay": "PT36H"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert shape(body) == [(1, "email", "PT0S"), (2, "sms", "P1DT12H"), (3, "sms", "P3D")]
    assert body["lineup"][1]["id"] == second["id"]
    assert body["lineup"][1]["delay_seconds"] == 36 * HOUR
    assert body["version"] == 2
    assert body["total_delay"] == "P4DT12H"


async def test_delete_message_renumbers_positions(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    first, second, third = policy["lineup"]
    response = await client.delete(
        f"{POLICIES}/{policy['id']}/lineup/{second['id']}", headers={**acme, **match(policy)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(m["id"], m["position"]) for m in body["lineup"]] == [
        (first["id"], 1),
        (third["id"], 2),
    ]
    assert body["total_delay"] == "P3D"
    gone = await client.patch(
        f"{POLICIES}/{policy['id']}/lineup/{second['id']}", headers={**acme, **ANY}, json={}
    )
    assert_problem(gone, 404, "not-found")

    response = await client.delete(
        f"{POLICIES}/{policy['id']}/lineup/{first['id']}", headers={**acme, **ANY}
    )
    assert response.status_code == 200, response.text
    assert [(m["id"], m["position"]) for m in response.json()["lineup"]] == [(third["id"], 1)]
    assert (await fetch(client, acme, policy["id"]))["lineup"] == response.json()["lineup"]


async def test_delays_are_iso_8601_durations(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    cases = [
        ("PT1H", HOUR, "PT1H"),
        ("P3D", 3 * DAY, "P3D"),
        ("P1W", 7 * DAY, "P7D"),
        ("pt90m", 5400, "PT1H30M"),
        ("P1DT2H", DAY + 2 * HOUR, "P1DT2H"),
    ]
    for delay, seconds, canonical in cases:
        response = await insert(client, acme, policy["id"], channel="email", delay=delay)
        assert response.status_code == 201, (delay, response.text)
        added = response.json()["lineup"][-1]
        assert (added["delay"], added["delay_seconds"]) == (canonical, seconds), delay


async def _assert_months_refused(
    client: httpx.AsyncClient, acme: dict[str, str], delay: str
) -> None:
    lineup = [{"channel": "email", "delay": delay}]
    response = await client.post(POLICIES, headers=acme, json={"name": "Bad", "lineup": lineup})
    body = assert_problem(response, 422, "validation-error", field="lineup.0.delay")
    assert "months" in body["errors"][0]["reason"], (delay, body)


async def test_years_and_months_are_refused_with_a_clear_reason(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    for delay in ("P1Y", "P2Y3D", "P1MT1H"):
        await _assert_months_refused(client, acme, delay)

    policy = await create_policy(client, acme)
    response = await insert(client, acme, policy["id"], channel="email", delay="3 days")
    body = assert_problem(response, 422, "validation-error", field="delay")
    assert "ISO 8601" in body["errors"][0]["reason"]


async def test_month_durations_are_refused_with_a_clear_reason(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    for delay in ("P1M", "P2M3D"):
        await _assert_months_refused(client, acme, delay)


async def test_lineup_delay_bounds_on_create(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    cases: list[tuple[list[str], str | None]] = [
        (["PT0S", "PT1H"], None),
        (["P30D", "P30D", "PT1H"], None),
        (["P30DT1S"], "lineup.0.delay"),
        (["P31D", "P1D"], "lineup.0.delay"),
        (["PT0S", "PT59M59S"], "lineup.1.delay"),
        (["PT0S", "PT0S"], "lineup.1.delay"),
        (["PT0S", "P1D", "P30DT1S"], "lineup.2.delay"),
    ]
    for number, (delays, field) in enumerate(cases):
        lineup = [{"channel": "email", "delay": d} for d in delays]
        response = await client.post(
            POLICIES, headers=acme, json={"name": f"P{number}", "lineup": lineup}
        )
        if field is None:
            assert response.status_code == 201, (delays, response.text)
            continue
        body = assert_problem(response, 422, "validation-error", field=field)
        assert [e["field"] for e in body["errors"]] == [field], delays
        assert "between" in body["errors"][0]["reason"]
    names = [p["name"] for p in (await client.get(POLICIES, headers=acme)).json()]
    assert names[0] == "Sandbox"
    assert sorted(names[1:]) == ["P0", "P1"]

    lineup = [{"channel": "email", "delay": d} for d in ("P40D", "PT5M", "P1D", "P31D")]
    response = await client.post(POLICIES, headers=acme, json={"name": "P", "lineup": lineup})
    body = assert_problem(response, 422, "validation-error")
    assert [e["field"] for e in body["errors"]] == [
        "lineup.0.delay",
        "lineup.1.delay",
        "lineup.3.delay",
    ]


async def test_zero_delay_insert_before_a_zero_delay_first_message_fails(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)  # message 1 has delay PT0S
    response = await insert(client, acme, policy["id"], channel="sms", delay="PT0S", position=1)
    body = assert_problem(response, 422, "validation-error", field="lineup.1.delay")
    assert "1 hour" in body["errors"][0]["reason"]
    assert await fetch(client, acme, policy["id"]) == policy

    response = await insert(client, acme, policy["id"], channel="sms", delay="PT30M", position=2)
    assert_problem(response, 422, "validation-error", field="lineup.1.delay")


async def test_edit_delay_out_of_bounds_is_refused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    url = f"{POLICIES}/{policy['id']}/lineup/{policy['lineup'][2]['id']}"
    response = await client.patch(url, headers={**acme, **ANY}, json={"delay": "PT30M"})
    assert_problem(response, 422, "validation-error", field="lineup.2.delay")
    response = await client.patch(url, headers={**acme, **ANY}, json={"delay": "P1Y"})
    assert_problem(response, 422, "validation-error", field="delay")
    response = await client.patch(url, headers={**acme, **ANY}, json={"channel": "fax"})
    assert_problem(response, 422, "validation-error", field="channel")
    assert await fetch(client, acme, policy["id"]) == policy


async def test_lineup_checks_follow_position_fatigue_and_dnd(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(
        client,
        acme,
        lineup=[{"channel": "email", "delay": "P1D"}, {"channel": "sms", "delay": "P1D"}],
        fatigue={"max_invites": {"enabled": True}},
        dnd_webhooks={"sms": "https://dnd.example.com/hook"},
    )
    assert [m["checks"] for m in policy["lineup"]] == [
        ["unsubscribe", "fatigue_pending_token", "fatigue_max_invites", "business_window"],
        ["unsubscribe", "business_window", "dnd"],
    ]

    response = await insert(client, acme, policy["id"], channel="sms", delay="PT0S", position=1)
    assert response.status_code == 201, response.text
    assert [m["checks"] for m in response.json()["lineup"]] == [
        ["unsubscribe", "fatigue_pending_token", "fatigue_max_invites", "business_window", "dnd"],
        ["unsubscribe", "business_window"],
        ["unsubscribe", "business_window", "dnd"],
    ]

    current = await fetch(client, acme, policy["id"])
    response = await patch(
        client,
        acme,
        current,
        {
            "fatigue": {"pending_token": {"enabled": False}, "max_invites": {"enabled": False}},
            "dnd_webhooks": {"sms": None, "email": "https://dnd.example.com/email"},
        },
    )
    assert response.status_code == 200, response.text
    assert [m["checks"] for m in response.json()["lineup"]] == [
        ["unsubscribe", "business_window"],
        ["unsubscribe", "business_window", "dnd"],
        ["unsubscribe", "business_window"],
    ]


# --- fatigue rules -----------------------------------------------------------------------------


async def test_fatigue_validation_on_create_and_patch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_invites": {"count": 0}}, "fatigue.max_invites.count"),
        ({"max_invites": {"days": 0}}, "fatigue.max_invites.days"),
        ({"max_invites": {"scope": "account"}}, "fatigue.max_invites.scope"),
        ({"max_invites": {"enabled": True, "colour": "red"}}, "fatigue.max_invites.colour"),
        ({"pending_token": {"enabled": "sometimes"}}, "fatigue.pending_token.enabled"),
        ({"uuid_field": "e mail!"}, "fatigue.uuid_field"),
        ({"uuid_field": ""}, "fatigue.uuid_field"),
    ]
    for fatigue, field in cases:
        response = await client.post(POLICIES, headers=acme, json={"name": "F", "fatigue": fatigue})
        assert_problem(response, 422, "validation-error", field=field)
        response = await patch(client, acme, policy, {"fatigue": fatigue})
        assert_problem(response, 422, "validation-error", field=field)
    assert await fetch(client, acme, policy["id"]) == policy


async def test_patch_merges_nested_fatigue_objects(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(
        client,
        acme,
        fatigue={"max_invites": {"enabled": True, "count": 5, "days": 14, "scope": "all"}},
    )
    response = await patch(client, acme, policy, {"fatigue": {"max_invites": {"enabled": False}}})
    assert response.status_code == 200, response.text
    assert response.json()["fatigue"] == {
        "uuid_field": "email",
        "pending_token": {"enabled": True},
        "max_invites": {"enabled": False, "count": 5, "days": 14, "scope": "all"},
    }
    assert await fetch(client, acme, policy["id"]) == response.json()

    fatigue = {
        "pending_token": {"enabled": False},
        "max_invites": {"enabled": True, "count": 2, "days": 7, "scope": "all"},
    }
    policy = await create_policy(client, acme, name="Accepted", fatigue=fatigue)
    assert policy["fatigue"] == {"uuid_field": "email", **fatigue}


async def test_uuid_field_is_returned_as_set(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme, fatigue={"uuid_field": "mobile"})
    assert policy["fatigue"]["uuid_field"] == "mobile"
    response = await patch(client, acme, policy, {"fatigue": {"uuid_field": "customer_id"}})
    assert response.json()["fatigue"]["uuid_field"] == "customer_id"
    assert (await fetch(client, acme, policy["id"]))["fatigue"]["uuid_field"] == "customer_id"


async def _stored(context: AppContext, policy_id: str) -> tuple[str, int]:
    async with context.sessions() as session:
        stored = await session.get(models.Policy, policy_id)
        assert stored is not None
        return stored.uuid_field, stored.fatigue_epoch


async def test_changing_uuid_field_starts_a_new_fatigue_epoch(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    policy = await create_policy(client, acme)
    assert await _stored(context, policy["id"]) == ("email", 1)

    edits: list[dict[str, Any]] = [
        {"name": "Renamed"},
        {"fatigue": {"max_invites": {"enabled": True}}},
        {"fatigue": {"uuid_field": "email"}},  # unchanged value
        {"business_rules": {"time_zone": "Europe/Berlin"}},
    ]
    for edit in edits:
        response = await client.patch(
            f"{POLICIES}/{policy['id']}", headers={**acme, **ANY}, json=edit
        )
        assert response.status_code == 200, response.text
    assert await _stored(context, policy["id"]) == ("email", 1)

    response = await client.patch(
        f"{POLICIES}/{policy['id']}",
        headers={**acme, **ANY},
        json={"fatigue": {"uuid_field": "mobile"}},
    )
    assert response.status_code == 200, response.text
    assert await _stored(context, policy["id"]) == ("mobile", 2)
    response = await client.patch(
        f"{POLICIES}/{policy['id']}",
        headers={**acme, **ANY},
        json={"fatigue": {"uuid_field": "attributes.member_id"}},
    )
    assert response.status_code == 200, response.text
    assert await _stored(context, policy["id"]) == ("attributes.member_id", 3)
    assert response.json()["fatigue"]["max_invites"]["enabled"] is True


# --- business rules ----------------------------------------------------------------------------


async def test_business_rules_accept_several_ranges_per_day(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    rules = {
        "time_zone": "America/New_York",
        "days": {
            "mon": [{"start": "08:00", "end": "12:00"}, {"start": "13:00", "end": "17:30"}],
            "sat": [{"start": "10:00", "end": "24:00"}],
        },
        "use_contact_time_zone": True,
    }
    policy = await create_policy(client, acme, business_rules=rules)
    assert policy["business_rules"] == rules


async def test_bad_business_rules_are_refused_naming_the_field(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    overlap = [{"start": "08:00", "end": "12:00"}, {"start": "11:00", "end": "17:00"}]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"time_zone": "Mars/Olympus_Mons"}, "business_rules.time_zone"),
        ({"time_zone": "localtime"}, "business_rules.time_zone"),
        ({"days": {"mon": [{"start": "17:00", "end": "08:00"}]}}, "business_rules.days.mon[0]"),
        ({"days": {"tue": [{"start": "09:00", "end": "09:00"}]}}, "business_rules.days.tue[0]"),
        ({"days": {"wed": overlap}}, "business_rules.days.wed[1]"),
        ({"days": {"thu": [{"start": "8h", "end": "17:00"}]}}, "business_rules.days.thu[0]"),
        ({"days": {"fri": [{"start": "08:00", "end": "24:30"}]}}, "business_rules.days.fri[0]"),
        ({"days": {"funday": [{"start": "08:00", "end": "17:00"}]}}, "business_rules.days.funday"),
        ({"days": {}}, "business_rules.days"),
    ]
    for rules, field in cases:
        response = await client.post(
            POLICIES, headers=acme, json={"name": "B", "business_rules": rules}
        )
        assert_problem(response, 422, "validation-error", field=field)
        response = await patch(client, acme, policy, {"business_rules": rules})
        assert_problem(response, 422, "validation-error", field=field)
    assert await fetch(client, acme, policy["id"]) == policy


async def test_patch_business_rules_days_replace_the_whole_map(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    saturday = {"sat": [{"start": "09:00", "end": "13:00"}]}
    response = await patch(client, acme, policy, {"business_rules": {"days": saturday}})
    assert response.status_code == 200, response.text
    assert response.json()["business_rules"] == {
        "time_zone": "UTC",
        "days": saturday,
        "use_contact_time_zone": False,
    }

    response = await patch(
        client, acme, response.json(), {"business_rules": {"time_zone": "Europe/Paris"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["business_rules"]["days"] == saturday
    assert response.json()["business_rules"]["time_zone"] == "Europe/Paris"


# --- DND webhooks ------------------------------------------------------------------------------


UNSAFE_URLS = [
    "http://10.0.0.5/dnd",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:10.0.0.1]/dnd",
    "https://user:secret@dnd.example.com/hook",
    "https://user@dnd.example.com/hook",
    "ftp://dnd.example.com/hook",
    "file:///etc/passwd",
    "dnd.example.com/hook",
    "http://127.0.0.2/dnd",  # loopback outside the 127.0.0.1/32 allow-list
    "http://[::1]/dnd",
    "http://0x0a000005/dnd",  # 10.0.0.5 spelled in hex
    "http://192.168.1.10:8080/dnd",
]


async def test_unsafe_dnd_webhooks_are_refused(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(client, acme)
    for url in UNSAFE_URLS:
        for channel in ("email", "sms"):
            field = f"dnd_webhooks.{channel}"
            response = await client.post(
                POLICIES, headers=acme, json={"name": "D", "dnd_webhooks": {channel: url}}
            )
            body = assert_problem(response, 422, "validation-error", field=field)
            assert body["errors"][0]["reason"], url
            response = await patch(client, acme, policy, {"dnd_webhooks": {channel: url}})
            assert_problem(response, 422, "validation-error", field=field)
    assert await fetch(client, acme, policy["id"]) == policy


async def test_allowed_dnd_webhooks_are_stored(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    policy = await create_policy(
        client,
        acme,
        dnd_webhooks={"email": "http://127.0.0.1:9/dnd", "sms": "https://dnd.example.com/hook"},
    )
    assert policy["dnd_webhooks"] == {
        "email": "http://127.0.0.1:9/dnd",
        "sms": "https://dnd.example.com/hook",
    }
    assert all("dnd" in m["checks"] for m in policy["lineup"])
    other = await create_policy(
        client, acme, name="Local", dnd_webhooks={"sms": "http://localhost:8080/dnd"}
    )
    assert other["dnd_webhooks"] == {"sms": "http://localhost:8080/dnd"}

    response = await patch(client, acme, policy, {"dnd_webhooks": {"email": None}})
    assert response.status_code == 200, response.text
    assert response.json()["dnd_webhooks"] == {"sms": "https://dnd.example.com/hook"}
    assert [("dnd" in m["checks"]) for m in response.json()["lineup"]] == [False, False, True]


async def test_http_dnd_webhook_refused_when_https_is_required(
    context: AppContext,
    clock: FrozenClock,
    tmp_path: Path,
    client: httpx.AsyncClient,
    acme: dict[str, str],
) -> None:
    settings = make_settings(
        context.settings.database_url or "", tmp_path / "strict", webhook_allow_http=False
    )
    strict_context = build_context(settings, clock)
    try:
        app = create_app(settings, context=strict_context)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as strict:
            response = await strict.post(
                POLICIES,
                headers=acme,
                json={"name": "D", "dnd_webhooks": {"email": "http://dnd.example.com/hook"}},
            )
            body = assert_problem(response, 422, "validation-error", field="dnd_webhooks.email")
            assert "https" in body["errors"][0]["reason"]

            response = await strict.post(
                POLICIES,
                headers=acme,
                json={"name": "D", "dnd_webhooks": {"sms": "https://dnd.example.com/hook"}},
            )
            assert response.status_code == 201, response.text
    finally:
        await strict_context.aclose()


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


async def _concurrently(
    context: AppContext, *requests: Awaitable[httpx.Response]
) -> list[httpx.Response]:
    """Run requests so that each has read the policy before any of them commits.

    SQLite serialises writers (BEGIN IMMEDIATE), so plain concurrency is enough there. On
    PostgreSQL the audit table is held locked until every request is waiting on a lock,
    which happens only after each has read the policy and tried to write.
    """
    if context.engine.dialect.name != "postgresql":
        return list(await asyncio.gather(*requests))
    async with context.engine.connect() as watcher, context.engine.begin() as locker:
        await locker.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
        tasks = [asyncio.ensure_future(r) for r in requests]
        for _ in range(500):
            waiting = (
                await watcher.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            ).scalar_one()
            await watcher.commit()
            if waiting >= len(tasks) or any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
    return list(await asyncio.gather(*tasks))


async def test_concurrent_edits_with_the_same_etag_let_only_one_through(
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    request: pytest.FixtureRequest,
) -> None:
    policy = await create_policy(client, acme)
    url = f"{POLICIES}/{policy['id']}"
    responses = await _concurrently(
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
    responses = await _concurrently(
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


# --- pure properties (no HTTP) -----------------------------------------------------------------

MAX = 30 * DAY
boundary_delays = st.sampled_from([0, 1, HOUR - 1, HOUR, HOUR + 1, MAX - 1, MAX, MAX + 1])
delays_strategy = st.one_of(boundary_delays, st.integers(min_value=0, max_value=40 * DAY))


@given(st.integers(min_value=0, max_value=10**10))
def test_format_then_parse_round_trips(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == text


@given(
    st.fixed_dictionaries(
        {},
        optional={
            unit: st.integers(min_value=0, max_value=10_000) for unit in ("W", "D", "H", "M", "S")
        },
    ).filter(bool)
)
def test_parse_then_format_keeps_the_seconds(parts: dict[str, int]) -> None:
    date = "".join(f"{parts[u]}{u}" for u in ("W", "D") if u in parts)
    clock = "".join(f"{parts[u]}{u}" for u in ("H", "M", "S") if u in parts)
    text = "P" + date + (f"T{clock}" if clock else "")
    seconds = (
        parts.get("W", 0) * 7 * DAY
        + parts.get("D", 0) * DAY
        + parts.get("H", 0) * HOUR
        + parts.get("M", 0) * 60
        + parts.get("S", 0)
    )
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.lists(delays_strategy, max_size=6))
def test_delay_problems_accept_exactly_the_valid_lineups(delays: list[int]) -> None:
    expected_bad = [
        position
        for position, delay in enumerate(delays, start=1)
        if not (0 <= delay <= MAX if position == 1 else HOUR <= delay <= MAX)
    ]
    problems = delay_problems(delays)
    assert [p.position for p in problems] == expected_bad
    assert (problems == []) == (
        (not delays or 0 <= delays[0] <= MAX) and all(HOUR <= d <= MAX for d in delays[1:])
    )


@given(st.integers(min_value=0, max_value=400 * DAY), st.lists(delays_strategy, max_size=6))
def test_validity_problem_iff_not_longer_than_total_delay(validity: int, delays: list[int]) -> None:
    assert (validity_problem(validity, delays) is None) == (validity > sum(delays))
    assert validity_problem(sum(delays), delays) is not None
    assert validity_problem(sum(delays) + 1, delays) is None


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
