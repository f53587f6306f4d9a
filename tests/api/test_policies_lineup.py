"""A policy's lineup through the HTTP API (R-POL-2, §8): insert, move, edit and delete
messages with positions kept 1..n, ISO 8601 delays within bounds (no months or years),
and the checks each message lists.
"""

from __future__ import annotations

import httpx

from dispatch_engine.rules.lineup import DAY, HOUR
from tests.conftest import create_policy
from tests.helpers import ANY, POLICIES, assert_problem, fetch, insert, match, patch, shape

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
    # Exact hours stay hours (issue 22: PT36H is not P1DT12H, a calendar day is not 24 h).
    assert shape(body) == [(1, "email", "PT0S"), (2, "sms", "PT36H"), (3, "sms", "P3D")]
    assert body["lineup"][1]["id"] == second["id"]
    assert body["lineup"][1]["delay_seconds"] == 36 * HOUR
    assert body["version"] == 2
    assert body["total_delay"] == "P3DT36H"


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
    late = ["too_late", "business_window"]  # min_validity_left is on by default (PT1H)
    assert [m["checks"] for m in policy["lineup"]] == [
        ["unsubscribe", "fatigue_pending_token", "fatigue_max_invites", *late],
        ["unsubscribe", *late, "dnd"],
    ]

    response = await insert(client, acme, policy["id"], channel="sms", delay="PT0S", position=1)
    assert response.status_code == 201, response.text
    assert [m["checks"] for m in response.json()["lineup"]] == [
        ["unsubscribe", "fatigue_pending_token", "fatigue_max_invites", *late, "dnd"],
        ["unsubscribe", *late],
        ["unsubscribe", *late, "dnd"],
    ]

    current = await fetch(client, acme, policy["id"])
    response = await patch(
        client,
        acme,
        current,
        {
            "fatigue": {"pending_token": {"enabled": False}, "max_invites": {"enabled": False}},
            "dnd_webhooks": {"sms": None, "email": "https://dnd.example.com/email"},
            "business_rules": {"min_validity_left": "PT0S"},  # too_late off
        },
    )
    assert response.status_code == 200, response.text
    assert [m["checks"] for m in response.json()["lineup"]] == [
        ["unsubscribe", "business_window"],
        ["unsubscribe", "business_window", "dnd"],
        ["unsubscribe", "business_window"],
    ]
