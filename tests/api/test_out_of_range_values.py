"""Values in range for the schema but not for the database or Python's datetime: 422, not 500.

Found by fuzzing the API (scripts/fuzz_api.py): a row number past an `integer` column
(PostgreSQL refuses it), a duration of billions of days (stored in seconds in an `integer`
column, added to times), and times within a day of year 1 or 9999 (Python cannot convert
them to UTC, nor add a delay to them). Durations are at most ten years and times lie in the
years 1000-9000 (schemas/durations.py, schemas/common.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import report_incident, setup_account
from tests.helpers import assert_problem, make_dispatch, post_csv

ACME = "/v1/accounts/acme"
EDGES_OF_TIME = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59Z"]


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    await setup_account(client, admin)
    policy, dispatch = await make_dispatch(client, admin)
    return {
        "policy": policy,
        "dispatch": dispatch,
        "incident": await report_incident(client, admin),
    }


async def refused(response: httpx.Response, field: str) -> None:
    assert assert_problem(response, 422, "validation-error")["field"] == field


async def test_a_row_number_past_an_integer_column_is_422(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any]
) -> None:
    batch = (await post_csv(client, admin, acme["dispatch"]["id"], "email\na@example.com\n")).json()
    for after in (2**31, 2**40, 10**30):
        response = await client.get(
            f"{ACME}/batches/{batch['batch']}", headers=admin, params={"rejected_after": after}
        )
        await refused(response, "rejected_after")
    response = await client.get(
        f"{ACME}/batches/{batch['batch']}", headers=admin, params={"rejected_after": 2**31 - 1}
    )
    assert response.status_code == 200, response.text


async def test_durations_are_at_most_ten_years(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any]
) -> None:
    path = f"{ACME}/dispatches/{acme['dispatch']['id']}"
    for validity in ("P3651D", "P99999999D", "P9999999999D", "PT99999999999999999999S"):
        response = await client.patch(path, headers=admin, json={"token_validity": validity})
        await refused(response, "token_validity")
    response = await client.patch(path, headers=admin, json={"token_validity": "P3650D"})
    assert response.status_code == 200, response.text
    assert response.json()["token_validity_seconds"] == 3650 * 86_400
    lineup = [{"channel": "email", "delay": "P5000D"}]
    response = await client.post(
        f"{ACME}/policies", headers=admin, json={"name": "Long", "lineup": lineup}
    )
    await refused(response, "lineup.0.delay")


@pytest.mark.parametrize("at", EDGES_OF_TIME)
async def test_times_at_the_edges_of_the_calendar_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any], at: str
) -> None:
    response = await client.post(
        "/v1/incidents", headers=admin, json={"title": "t", "service": "s", "started_at": at}
    )
    await refused(response, "started_at")
    response = await client.get("/v1/admin/audit", headers=admin, params={"since": at})
    await refused(response, "since")
    response = await client.post(
        f"{ACME}/policies/{acme['policy']['id']}/preview", headers=admin, json={"posted_at": at}
    )
    await refused(response, "posted_at")
    incidents = (await client.get("/v1/incidents", headers=admin)).json()["items"]
    assert [i["id"] for i in incidents] == [acme["incident"]]


async def test_times_well_inside_the_calendar_are_accepted(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any]
) -> None:
    response = await client.get(
        "/v1/admin/audit", headers=admin, params={"since": "1000-01-02T00:00:00+14:00"}
    )
    assert response.status_code == 200, response.text
    response = await client.post(
        f"{ACME}/policies/{acme['policy']['id']}/preview",
        headers=admin,
        json={"posted_at": "8999-06-01T00:00:00Z"},
    )
    assert response.status_code == 200, response.text
