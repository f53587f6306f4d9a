"""A policy's rules through the HTTP API (R-POL-3..5, §8): fatigue settings validated and
merged (a new UUID field starts a new epoch), business rules per day, and DND webhooks
refused unless safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dispatch_engine import models
from dispatch_engine.api.app import create_app
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext, build_context
from tests.conftest import create_policy, make_settings
from tests.helpers import ANY, POLICIES, assert_problem, fetch, patch

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
    assert policy["business_rules"] == {**rules, "min_validity_left": "PT1H"}


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
        "min_validity_left": "PT1H",
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
