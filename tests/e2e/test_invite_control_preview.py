"""Controlling invites end to end: the policy preview (R-RUL-3). It shows the saved or the
proposed settings, uses the contact's time zone when the policy does, refuses a naive
posted_at, writes nothing, and matches what the pipeline does.

Everything goes through the HTTP API and the worker's job functions (the ones APScheduler
calls) with the injected frozen clock, so days pass in milliseconds. The store is read
directly only for what the API cannot show: raw table contents, ciphertexts, row counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import Base
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ANN,
    EMAIL,
    WEEKDAYS,
    Api,
    contact,
    hours,
    is_problem,
    raw_scan,
    tick,
    utc,
    z,
)

BERLIN_HOURS = hours("08:00", "17:00", "Europe/Berlin")
PREVIEW_LINEUP = [
    {"channel": "email", "delay": "PT0S"},
    {"channel": "email", "delay": "PT2H"},
    {"channel": "sms", "delay": "P1D"},
]
POSTED_AT = "2026-03-06T16:30:00+01:00"  # Friday 16:30 in Berlin (CET)


# --- helpers -----------------------------------------------------------------------------


async def row_counts(context: AppContext) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with context.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            result = await connection.execute(text(f'SELECT COUNT(*) FROM "{table.name}"'))
            counts[table.name] = int(result.scalar_one())
    return counts


# --- R-RUL-3: policy preview --------------------------------------------------------------


def window(message: dict[str, Any]) -> tuple[datetime, datetime, str]:
    w = message["window"]
    return utc(w["start"]), utc(w["end"]), w["time_zone"]


async def test_preview_of_the_saved_policy(api: Api) -> None:
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    response = await api.preview(policy["id"], {"posted_at": POSTED_AT})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["policy"], body["proposed"]) == (policy["id"], False)
    assert utc(body["posted_at"]) == z(2026, 3, 6, 15, 30)
    messages = body["messages"]
    assert [
        (m["position"], m["lineup_message_id"], m["channel"], m["delay"]) for m in messages
    ] == [(s["position"], s["id"], s["channel"], s["delay"]) for s in policy["lineup"]]
    first, second, third = messages
    # 1: Friday 16:30 Berlin, inside the window.
    assert utc(first["due_at"]) == utc(first["send_at"]) == z(2026, 3, 6, 15, 30)
    assert (first["deferred"], first["reason"]) == (False, None)
    assert window(first) == (z(2026, 3, 6, 7), z(2026, 3, 6, 16), "Europe/Berlin")
    # 2: due 18:30 Berlin, after closing: Monday 08:00 Berlin.
    assert utc(second["due_at"]) == z(2026, 3, 6, 17, 30)
    assert utc(second["send_at"]) == z(2026, 3, 9, 7)
    assert (second["deferred"], second["reason"]) == (True, "deferred_business_hours")
    assert window(second) == (z(2026, 3, 9, 7), z(2026, 3, 9, 16), "Europe/Berlin")
    # 3: a day after message 2 went out: Tuesday 08:00 Berlin.
    assert utc(third["due_at"]) == utc(third["send_at"]) == z(2026, 3, 10, 7)
    assert (third["deferred"], third["reason"]) == (False, None)
    assert window(third) == (z(2026, 3, 10, 7), z(2026, 3, 10, 16), "Europe/Berlin")


async def test_preview_of_proposed_settings_instead_of_the_saved_ones(api: Api) -> None:
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    etag = await api.etag(policy["id"])
    proposed = {
        "lineup": [{"channel": "sms", "delay": "PT1H"}, {"channel": "email", "delay": "PT2H"}],
        "business_rules": hours("08:00", "20:00", "Europe/Berlin", (*WEEKDAYS, "sat")),
    }
    response = await api.preview(policy["id"], {"posted_at": POSTED_AT, "policy": proposed})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["proposed"] is True
    messages = body["messages"]
    assert [(m["position"], m["lineup_message_id"], m["channel"]) for m in messages] == [
        (1, None, "sms"),
        (2, None, "email"),
    ]
    # 17:30 and 19:30 Berlin: open until 20:00 under the proposal.
    assert [utc(m["send_at"]) for m in messages] == [z(2026, 3, 6, 16, 30), z(2026, 3, 6, 18, 30)]
    assert [m["deferred"] for m in messages] == [False, False]
    assert window(messages[1])[1] == z(2026, 3, 6, 19)
    # Lineup only: the default business rules (Mon–Fri all day, UTC).
    response = await api.preview(
        policy["id"],
        {"posted_at": "2026-03-07T10:00:00Z", "policy": {"lineup": [EMAIL]}},
    )
    assert response.status_code == 200, response.text
    only = response.json()["messages"][0]
    assert (utc(only["send_at"]), only["reason"]) == (z(2026, 3, 9, 0), "deferred_business_hours")
    # A proposal is validated like a saved policy.
    bad = await api.preview(
        policy["id"],
        {
            "posted_at": POSTED_AT,
            "policy": {"lineup": [EMAIL, {"channel": "sms", "delay": "PT5M"}]},
        },
    )
    is_problem(bad, 422)
    # The saved policy is untouched.
    assert await api.etag(policy["id"]) == etag
    saved = await api.preview(policy["id"], {"posted_at": POSTED_AT})
    assert utc(saved.json()["messages"][1]["send_at"]) == z(2026, 3, 9, 7)


async def test_preview_uses_the_contact_time_zone_when_the_policy_does(api: Api) -> None:
    local = await api.policy(
        "Local",
        PREVIEW_LINEUP,
        business_rules={**BERLIN_HOURS, "use_contact_time_zone": True},
    )
    plain = await api.policy("Plain", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    body = {"posted_at": POSTED_AT, "time_zone": "America/New_York"}
    response = await api.preview(local["id"], body)
    assert response.status_code == 200, response.text
    first, second, third = response.json()["messages"]
    # 10:30 and 12:30 in New York (EST): open.
    assert (utc(first["send_at"]), first["deferred"]) == (z(2026, 3, 6, 15, 30), False)
    assert (utc(second["send_at"]), second["deferred"]) == (z(2026, 3, 6, 17, 30), False)
    assert window(second) == (z(2026, 3, 6, 13), z(2026, 3, 6, 22), "America/New_York")
    # Saturday 12:30 EST → Monday 08:00 EDT (the clocks changed on Sunday 8 March).
    assert utc(third["due_at"]) == z(2026, 3, 7, 17, 30)
    assert (utc(third["send_at"]), third["reason"]) == (
        z(2026, 3, 9, 12),
        "deferred_business_hours",
    )
    assert window(third)[2] == "America/New_York"
    # Without a contact zone, or for a policy that does not use it: the policy's zone.
    for policy_id, request in (
        (local["id"], {"posted_at": POSTED_AT}),
        (plain["id"], body),
    ):
        response = await api.preview(policy_id, request)
        assert response.status_code == 200, response.text
        messages = response.json()["messages"]
        assert [utc(m["send_at"]) for m in messages] == [
            z(2026, 3, 6, 15, 30),
            z(2026, 3, 9, 7),
            z(2026, 3, 10, 7),
        ]
        assert {m["window"]["time_zone"] for m in messages} == {"Europe/Berlin"}
    bad = await api.preview(local["id"], {"posted_at": POSTED_AT, "time_zone": "Mars/Olympus"})
    assert is_problem(bad, 422)["field"] == "time_zone"


async def test_preview_refuses_a_naive_posted_at(api: Api) -> None:
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=BERLIN_HOURS)
    for body in ({"posted_at": "2026-03-06T16:30:00"}, {}, {"posted_at": "friday"}):
        response = await api.preview(policy["id"], body)
        assert is_problem(response, 422)["field"] == "posted_at", body
    missing = await api.preview("pol_nope", {"posted_at": POSTED_AT})
    is_problem(missing, 404)


async def test_preview_writes_nothing(
    api: Api, worker: Worker, context: AppContext, operator: dict[str, str]
) -> None:
    policy = await api.policy(
        "Berlin", PREVIEW_LINEUP, business_rules={**BERLIN_HOURS, "use_contact_time_zone": True}
    )
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    await api.pull()

    async def audit() -> list[dict[str, Any]]:
        response = await api.client.get("/v1/admin/audit", headers=operator, params={"limit": 1000})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    audit_before, counts_before = await audit(), await row_counts(context)
    scan_before = await raw_scan(context)
    for body in (
        {"posted_at": POSTED_AT},
        {"posted_at": POSTED_AT, "time_zone": "Asia/Tokyo"},
        {"posted_at": POSTED_AT, "policy": {"lineup": PREVIEW_LINEUP}},
        {"posted_at": "2026-03-06T16:30:00"},  # refused
    ):
        await api.preview(policy["id"], body)
    await tick(worker)
    assert await api.pull() == []
    assert await row_counts(context) == counts_before
    assert await audit() == audit_before
    assert await raw_scan(context) == scan_before


@pytest.mark.parametrize("time_zone", [None, "America/New_York"])
async def test_preview_matches_what_the_pipeline_does(
    api: Api, worker: Worker, clock: FrozenClock, time_zone: str | None
) -> None:
    rules = {**BERLIN_HOURS, "use_contact_time_zone": time_zone is not None}
    policy = await api.policy("Berlin", PREVIEW_LINEUP, business_rules=rules)
    dispatch = await api.dispatch(policy, validity="P14D")
    request: dict[str, Any] = {"posted_at": POSTED_AT}
    person = contact(ANN, "ann")
    if time_zone:
        request["time_zone"] = time_zone
        person["time_zone"] = time_zone
    response = await api.preview(policy["id"], request)
    assert response.status_code == 200, response.text
    preview = response.json()["messages"]

    clock.set(utc(POSTED_AT))
    await api.post(dispatch, person)
    bodies: list[dict[str, Any]] = []
    for _ in range(20):  # walk the worker from one scheduled time to the next
        await tick(worker)
        bodies += await api.pull()
        invite = await api.invite(dispatch, "ann")
        waiting = [m for m in invite["messages"] if m["state"] in ("pending", "deferred")]
        if not waiting:
            break
        upcoming = utc(waiting[0]["scheduled_for"])
        assert upcoming > clock.now(), waiting
        clock.set(upcoming - timedelta(minutes=1))
        await tick(worker)
        assert await api.pull() == []  # nothing goes out early
        clock.set(upcoming)
    assert invite["state"] == "completed"
    assert [utc(m["sent_at"]) for m in invite["messages"]] == [utc(p["send_at"]) for p in preview]
    assert [utc(m["due_at"]) for m in invite["messages"]] == [utc(p["due_at"]) for p in preview]
    assert [(b["lineup_position"], utc(b["sent_at"])) for b in bodies] == [
        (p["position"], utc(p["send_at"])) for p in preview
    ]
    assert [m["state"] == "sent" for m in invite["messages"]] == [True] * len(PREVIEW_LINEUP)
