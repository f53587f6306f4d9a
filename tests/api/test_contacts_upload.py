"""Contact files accepted through the HTTP API (R-INV-1, §8 contacts/batches/invites).

CSV and JSON uploads answer with their counts and a batch to poll; each accepted row
becomes an invite with its token, its validity and its first message.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from dispatch_engine.clock import FrozenClock
from tests.conftest import T0
from tests.helpers import (
    ACME,
    counts,
    get_batch,
    invites_by_external_id,
    make_dispatch,
    post_csv,
    post_json,
)

TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,}$")


# --- helpers -----------------------------------------------------------------------------


def ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


# --- uploads, counts and batches ------------------------------------------------------------


async def test_csv_upload_gives_counts_and_a_pollable_batch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    csv = (
        "email,mobile,external_id,first_name\n"
        "ann@example.com,+33612345678,c-1,Ann\n"
        "bob@example.com,,c-2,Bob\n"
        "cy@example.com,+14155552671,c-3,Cy\n"
    )
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["counts"] == counts(3, 3)
    assert body["dispatch"] == dispatch["id"]
    assert body["rejected_rows"] == []
    assert body["error"] is None
    assert isinstance(body["batch"], str) and body["batch"]

    batch = await get_batch(client, acme, body["batch"])
    assert batch["batch"] == body["batch"]
    assert batch["status"] == "completed"
    assert batch["counts"] == body["counts"]
    assert batch["rejected_rows"] == []
    assert batch["next_rejected_after"] is None
    assert batch["finished_at"] is not None
    for external_id in ("c-1", "c-2", "c-3"):
        found = await invites_by_external_id(client, acme, external_id, dispatch["id"])
        assert len(found) == 1
        assert found[0]["batch"] == body["batch"]


async def test_json_upload_gives_counts_and_a_pollable_batch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    contacts = [
        {"email": "ann@example.com", "external_id": "j-1", "attributes": {"tier": "gold"}},
        {"email": "bo@example.com", "mobile": "+14155552671", "external_id": "j-2", "plan": "b"},
        {"email": "not-an-email", "external_id": "j-3"},
        "not an object",
    ]
    response = await post_json(client, acme, dispatch["id"], contacts)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["counts"] == counts(4, 2, rejected=2)
    assert [r["row"] for r in body["rejected_rows"]] == [3, 4]
    assert body["rejected_rows"][0]["field"] == "email"

    batch = await get_batch(client, acme, body["batch"])
    assert batch["counts"] == body["counts"]
    assert batch["rejected_rows"] == body["rejected_rows"]
    assert len(await invites_by_external_id(client, acme, "j-1", dispatch["id"])) == 1
    assert len(await invites_by_external_id(client, acme, "j-2", dispatch["id"])) == 1
    assert await invites_by_external_id(client, acme, "j-3", dispatch["id"]) == []


async def test_content_type_parameters_and_case_are_accepted(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(
        client,
        acme,
        dispatch["id"],
        "email,external_id\r\nann@example.com,c-1\r\n",
        headers={"Content-Type": "Text/CSV; charset=utf-8"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(1, 1)


# --- invites and their first message -----------------------------------------------------------


async def test_each_accepted_row_becomes_an_invite_with_token_validity_and_first_message(
    client: httpx.AsyncClient, acme: dict[str, str], clock: FrozenClock
) -> None:
    received = datetime(2026, 3, 3, 14, 15, 16, tzinfo=UTC)
    clock.set(received)
    _, dispatch = await make_dispatch(
        client,
        acme,
        validity="P10D",
        lineup=[
            {"channel": "sms", "delay": "PT2H30M"},
            {"channel": "email", "delay": "P1D"},
        ],
    )
    csv = (
        "email,mobile,external_id\n"
        "ann@example.com,+33612345678,c-1\n"
        "bo@example.com,+14155552671,c-2\n"
        "cy@example.com,,c-3\n"
    )
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(3, 3)
    clock.advance(timedelta(hours=1))  # later reads must not move any of the times

    tokens = set()
    for external_id in ("c-1", "c-2", "c-3"):
        (invite,) = await invites_by_external_id(client, acme, external_id, dispatch["id"])
        assert invite["external_id"] == external_id
        assert invite["dispatch"] == dispatch["id"]
        assert invite["questionnaire"] == "q-1"
        assert invite["state"] == "active"
        assert invite["contact_erased"] is False
        assert TOKEN.match(invite["token"]), invite["token"]
        tokens.add(invite["token"])
        assert ts(invite["received_at"]) == received
        assert ts(invite["valid_until"]) == received + timedelta(days=10)
        assert len(invite["messages"]) == 1
        first = invite["messages"][0]
        assert first["position"] == 1
        assert first["channel"] == "sms"
        assert first["state"] == "pending"
        assert ts(first["due_at"]) == received + timedelta(hours=2, minutes=30)
        assert first["sent_at"] is None
        by_token = await client.get(
            f"{ACME}/invites", headers=acme, params={"token": invite["token"]}
        )
        assert [i["id"] for i in by_token.json()] == [invite["id"]]
        by_id = await client.get(f"{ACME}/invites/{invite['id']}", headers=acme)
        assert by_id.status_code == 200
        assert by_id.json()["token"] == invite["token"]
    assert len(tokens) == 3


async def test_first_message_with_zero_delay_is_due_at_reception(
    client: httpx.AsyncClient, acme: dict[str, str], clock: FrozenClock
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_json(
        client, acme, dispatch["id"], [{"email": "ann@example.com", "external_id": "z-1"}]
    )
    assert response.status_code == 202, response.text
    (invite,) = await invites_by_external_id(client, acme, "z-1", dispatch["id"])
    assert ts(invite["messages"][0]["due_at"]) == T0
    assert ts(invite["valid_until"]) == T0 + timedelta(days=14)
