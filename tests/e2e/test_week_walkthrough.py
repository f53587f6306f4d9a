"""A week of a Mon–Fri 08:00–17:00 policy with three lineup messages, minute by minute.

The real HTTP API and the real worker jobs (the functions APScheduler calls) run against
an injected clock, so days pass in milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jsonschema

from dispatch_engine.clock import FrozenClock
from dispatch_engine.scheduler.worker import Worker
from dispatch_engine.schemas.queue_message import load_json_schema
from tests.conftest import setup_account, templates_for
from tests.helpers import Api, tick

BERLIN_HOURS = {
    "time_zone": "Europe/Berlin",
    "days": {d: [{"start": "08:00", "end": "17:00"}] for d in ("mon", "tue", "wed", "thu", "fri")},
}


async def test_week_of_business_hours(
    client: httpx.AsyncClient, admin: dict[str, str], clock: FrozenClock, worker: Worker
) -> None:
    # Friday 2026-03-06 16:30 Berlin (15:30 UTC).
    clock.set(datetime(2026, 3, 6, 15, 30, tzinfo=UTC))
    await setup_account(client, admin)
    api = Api(client, admin)
    policy = (
        await client.post(
            "/v1/accounts/acme/policies",
            headers=admin,
            json={
                "name": "Week",
                "lineup": [
                    {"channel": "email", "delay": "PT0S"},
                    {"channel": "email", "delay": "PT2H"},
                    {"channel": "sms", "delay": "P1D"},
                ],
                "business_rules": BERLIN_HOURS,
            },
        )
    ).json()
    dispatch = (
        await client.post(
            "/v1/accounts/acme/dispatches",
            headers=admin,
            json={
                "questionnaire_id": "nps-q1",
                "policy_id": policy["id"],
                "token_validity": "P14D",
                "message_templates": templates_for(policy),
            },
        )
    ).json()
    csv = (
        "email,mobile,external_id,first_name\n"
        "ann@example.com,+33612345678,c-1,Ann\n"
        "bob@example.com,+14155552671,c-2,Bob\n"
    )
    response = await client.post(
        f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
        headers={**admin, "Content-Type": "text/csv"},
        content=csv.encode(),
    )
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == {"rows": 2, "accepted": 2, "rejected": 0, "duplicates": 0}

    schema = load_json_schema()
    # Friday 16:30: message 1 goes out at once.
    await tick(worker)
    first = await api.pull()
    assert sorted(m["recipient"]["email"] for m in first) == ["ann@example.com", "bob@example.com"]
    for message in first:
        jsonschema.validate(message, schema)
        assert message["lineup_position"] == 1
        assert message["attributes"] == {"first_name": message["attributes"]["first_name"]}
    # Message 2 is due Friday 18:30 Berlin: after closing, so it waits for Monday 08:00.
    clock.set(datetime(2026, 3, 6, 17, 30, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    invite = (await client.get("/v1/accounts/acme/invites?external_id=c-1", headers=admin)).json()[
        0
    ]
    second = invite["messages"][1]
    assert second["state"] == "deferred"
    assert second["reason"] == "deferred_business_hours"
    assert second["scheduled_for"] == "2026-03-09T07:00:00Z"  # Monday 08:00 CET
    # Monday 07:59 Berlin: still nothing; 08:00: message 2.
    clock.set(datetime(2026, 3, 9, 6, 59, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    clock.set(datetime(2026, 3, 9, 7, 0, tzinfo=UTC))
    await tick(worker)
    second_batch = await api.pull()
    assert [m["lineup_position"] for m in second_batch] == [2, 2]
    assert all(m["scheduled_at"] == "2026-03-06T17:30:00Z" for m in second_batch)
    # Message 3 (SMS) one day after message 2: Tuesday 08:00.
    clock.set(datetime(2026, 3, 10, 6, 59, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    clock.set(datetime(2026, 3, 10, 7, 0, tzinfo=UTC))
    await tick(worker)
    third = await api.pull()
    assert sorted(m["recipient"]["mobile"] for m in third) == ["+14155552671", "+33612345678"]
    assert {m["channel"] for m in third} == {"sms"}
    invite = (await client.get("/v1/accounts/acme/invites?external_id=c-1", headers=admin)).json()[
        0
    ]
    assert [m["state"] for m in invite["messages"]] == ["sent", "sent", "sent"]
    assert invite["state"] == "completed"
    # Nothing more, all week.
    for day in range(7):
        clock.advance(timedelta(days=1))
        await tick(worker)
        assert await api.pull() == []
