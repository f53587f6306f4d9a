"""Contact files through the HTTP API (R-INV-1, R-INV-2, R-INV-5, §8 contacts/batches/invites).

CSV and JSON uploads, per-row rejections with spreadsheet row numbers, paginated rejected
rows, the invites and first messages they create, Idempotency-Key replays, duplicates by
external id, encryption at rest, whole-file errors, streaming in small chunks and the
fatigue rule 1 lock for two rows of one person.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.delivery.contacts import open_contact
from dispatch_engine.models import Base, Invite, Message
from dispatch_engine.security.crypto import DecryptionError
from tests.conftest import T0, setup_account
from tests.helpers import (
    ACME,
    CSV,
    assert_problem,
    counts,
    get_batch,
    invites_by_external_id,
    make_dispatch,
    post_csv,
    post_json,
)

TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,}$")
EMAIL_ONLY = [{"channel": "email", "delay": "PT0S"}, {"channel": "email", "delay": "P2D"}]


# --- helpers -----------------------------------------------------------------------------


async def invite_rows(context: AppContext, dispatch_id: str) -> list[Invite]:
    async with context.sessions() as session:
        rows = await session.execute(
            select(Invite).where(Invite.dispatch_id == dispatch_id).order_by(Invite.row_number)
        )
        return list(rows.scalars())


async def count_rows(context: AppContext, model: type[Base], dispatch_id: str) -> int:
    async with context.sessions() as session:
        column = model.__table__.c.dispatch_id  # type: ignore[attr-defined]
        query = select(func.count()).select_from(model).where(column == dispatch_id)
        return int((await session.execute(query)).scalar_one())


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


# --- bad rows --------------------------------------------------------------------------------


BAD_VALUES = ("not-an-email", "12345", "0612345678", "Mars/Olympus", "+33612345678")


async def test_bad_rows_are_rejected_one_by_one_with_row_number_and_reason(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(
        client, acme, lineup=EMAIL_ONLY, fatigue={"uuid_field": "member_id"}
    )
    csv = (
        "email,mobile,external_id,time_zone,member_id\n"  # row 1
        "ann@example.com,,ok-1,Europe/Paris,m-1\n"  # row 2: fine
        "not-an-email,,bad-email,,m-2\n"  # row 3: malformed email
        "cy@example.com,12345,bad-phone,,m-3\n"  # row 4: phone without country code
        "di@example.com,0612345678,bad-phone-2,,m-4\n"  # row 5: national, not E.164
        ",+33612345678,no-email,,m-5\n"  # row 6: email-only lineup, no email
        "ed@example.com,,no-member,,\n"  # row 7: UUID field missing
        "fay@example.com,,bad-zone,Mars/Olympus,m-7\n"  # row 8: unknown time zone
        "gus@example.com,+14155552671,ok-2,,m-8\n"  # row 9: fine
    )
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["counts"] == counts(8, 2, rejected=6)
    rejected = {r["row"]: r for r in body["rejected_rows"]}
    assert sorted(rejected) == [3, 4, 5, 6, 7, 8]
    assert rejected[3]["field"] == "email"
    assert rejected[4]["field"] == "mobile"
    assert rejected[5]["field"] == "mobile"
    assert rejected[6]["field"] == "email"
    assert rejected[7]["field"] == "member_id"
    assert rejected[8]["field"] == "time_zone"
    for row in rejected.values():
        assert row["reason"].strip(), row
        for value in BAD_VALUES:
            assert value not in row["reason"], row
    assert "time zone" in rejected[8]["reason"]
    assert "member_id" in rejected[7]["reason"]

    batch = await get_batch(client, acme, body["batch"])
    assert batch["counts"] == body["counts"]
    assert batch["rejected_rows"] == body["rejected_rows"]
    for external_id in ("ok-1", "ok-2"):
        assert len(await invites_by_external_id(client, acme, external_id, dispatch["id"])) == 1
    for external_id in ("bad-email", "bad-phone", "bad-phone-2", "no-email", "no-member"):
        assert await invites_by_external_id(client, acme, external_id, dispatch["id"]) == []
    assert await count_rows(context, Invite, dispatch["id"]) == 2


async def test_row_numbers_count_blank_lines_and_multi_line_fields_like_a_spreadsheet(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme, lineup=EMAIL_ONLY)
    csv = (
        "email,external_id,note\r\n"  # row 1
        "ann@example.com,c-1,plain\r\n"  # row 2
        "\r\n"  # row 3: blank
        'bob@example.com,c-2,"two\r\nlines, quoted"\r\n'  # row 4 (one record, two lines)
        "broken,c-3,x\r\n"  # row 5
        ",c-4,x\r\n"  # row 6
        "cy@example.com,c-5,x,secret-extra\r\n"  # row 7: more cells than the header
        "di@example.com,c-6,x,,\r\n"  # row 8: stray trailing delimiters are fine
        'ed@example.com,c-7,"never closed\r\n'  # row 9: quote open at the end of the file
    )
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["counts"] == counts(7, 3, rejected=4)
    assert [(r["row"], r["field"]) for r in body["rejected_rows"]] == [
        (5, "email"),
        (6, "email"),
        (7, "row"),
        (9, "row"),
    ]
    assert "secret-extra" not in response.text
    assert "never closed" not in response.text


async def test_rejected_rows_are_paginated_exactly_once_in_order(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    lines = ["email,external_id"]
    bad_rows: list[int] = []
    for i in range(275):
        row_number = len(lines) + 1
        if i % 11 == 10:
            lines.append(f"good{i}@example.com,g-{i}")
        else:
            lines.append(f"bad-{i}-at-example.com,b-{i}")
            bad_rows.append(row_number)
    assert len(bad_rows) == 250
    response = await post_csv(client, acme, dispatch["id"], "\n".join(lines) + "\n")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["counts"] == counts(275, 25, rejected=250)
    assert [r["row"] for r in body["rejected_rows"]] == bad_rows[:100]
    assert body["next_rejected_after"] == bad_rows[99]

    seen: list[int] = []
    after = 0
    pages = 0
    while True:
        page = await get_batch(client, acme, body["batch"], limit=100, rejected_after=after)
        pages += 1
        assert page["counts"] == body["counts"]
        assert len(page["rejected_rows"]) <= 100
        seen.extend(r["row"] for r in page["rejected_rows"])
        assert all(r["field"] == "email" for r in page["rejected_rows"])
        if page["next_rejected_after"] is None:
            break
        assert page["next_rejected_after"] == seen[-1]
        after = page["next_rejected_after"]
        assert pages < 10
    assert seen == bad_rows
    assert pages == 3


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


# --- Idempotency-Key ------------------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer_and_creates_nothing(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    csv = "email,external_id\nann@example.com,c-1\nbad,c-2\nbob@example.com,\n"
    key = {"Idempotency-Key": "upload-2026-03-02"}
    first = await post_csv(client, acme, dispatch["id"], csv, headers=key)
    assert first.status_code == 202, first.text
    assert first.headers.get("Idempotent-Replayed") is None
    assert first.json()["counts"] == counts(3, 2, rejected=1)
    assert await count_rows(context, Invite, dispatch["id"]) == 2
    assert await count_rows(context, Message, dispatch["id"]) == 2

    for _ in range(2):
        replay = await post_csv(client, acme, dispatch["id"], csv, headers=key)
        assert replay.status_code == 202, replay.text
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json() == first.json()
    assert await count_rows(context, Invite, dispatch["id"]) == 2
    assert await count_rows(context, Message, dispatch["id"]) == 2
    assert (await get_batch(client, acme, first.json()["batch"]))["counts"] == counts(3, 2, 1)

    other = await post_csv(client, acme, dispatch["id"], csv + "cy@example.com,c-3\n", headers=key)
    assert_problem(other, 422, "idempotency-key-reused")
    as_json = await post_json(
        client, acme, dispatch["id"], [{"email": "cy@example.com"}], headers=key
    )
    assert_problem(as_json, 422, "idempotency-key-reused")
    assert await count_rows(context, Invite, dispatch["id"]) == 2

    # The same key on another dispatch of the account is another request: refused too.
    _, second = await make_dispatch(client, acme, name="Second")
    elsewhere = await post_csv(client, acme, second["id"], csv, headers=key)
    assert_problem(elsewhere, 422, "idempotency-key-reused")
    assert await count_rows(context, Invite, second["id"]) == 0


async def test_idempotency_keys_are_per_account(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    await setup_account(client, acme, "globex")
    _, acme_dispatch = await make_dispatch(client, acme)
    _, globex_dispatch = await make_dispatch(client, acme, "globex")
    key = {"Idempotency-Key": "same-key"}
    csv = "email,external_id\nann@example.com,c-1\n"
    first = await post_csv(client, acme, acme_dispatch["id"], csv, headers=key)
    assert first.status_code == 202, first.text
    theirs = await post_csv(client, acme, globex_dispatch["id"], csv, account="globex", headers=key)
    assert theirs.status_code == 202, theirs.text
    assert theirs.headers.get("Idempotent-Replayed") is None
    assert theirs.json()["batch"] != first.json()["batch"]
    assert theirs.json()["counts"] == counts(1, 1)
    assert await count_rows(context, Invite, globex_dispatch["id"]) == 1
    assert await count_rows(context, Invite, acme_dispatch["id"]) == 1


async def test_idempotency_key_is_released_when_the_dispatch_is_unknown(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "k-404"}
    missing = await post_csv(client, acme, "dsp_missing", "email\nann@example.com\n", headers=key)
    assert_problem(missing, 404, "not-found")
    response = await post_csv(client, acme, dispatch["id"], "email\nann@example.com\n", headers=key)
    assert response.status_code == 202, response.text
    assert response.headers.get("Idempotent-Replayed") is None


async def test_same_key_while_the_first_request_is_in_flight_is_409(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "slow-upload"}
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"email,external_id\n"
        started.set()
        await release.wait()
        yield b"ann@example.com,c-1\n"

    first = asyncio.create_task(
        client.post(
            f"{ACME}/dispatches/{dispatch['id']}/contacts",
            headers={**acme, **CSV, **key},
            content=slow_body(),
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    try:
        second = await post_csv(
            client, acme, dispatch["id"], "email\nbob@example.com\n", headers=key
        )
        assert_problem(second, 409, "idempotency-in-flight")
    finally:
        release.set()
    response = await first
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(1, 1)
    replay = await post_csv(
        client, acme, dispatch["id"], "email,external_id\nann@example.com,c-1\n", headers=key
    )
    assert replay.status_code == 202, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == response.json()
    assert await count_rows(context, Invite, dispatch["id"]) == 1


async def test_replayed_failed_upload_is_still_a_problem(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "broken-file"}
    csv = "email,email\nann@example.com,ann@example.com\n"
    first = await post_csv(client, acme, dispatch["id"], csv, headers=key)
    body = assert_problem(first, 422, "contact-file-unreadable")
    replay = await post_csv(client, acme, dispatch["id"], csv, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == body
    assert_problem(replay, 422, "contact-file-unreadable")


# --- duplicates by external id ----------------------------------------------------------------------


async def test_same_external_id_in_one_file_and_in_a_later_file_gives_one_invite(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    first = await post_csv(
        client,
        acme,
        dispatch["id"],
        "email,external_id\nann@example.com,c-1\nann.other@example.com,c-1\nbob@example.com,c-2\n",
    )
    assert first.status_code == 202, first.text
    assert first.json()["counts"] == counts(3, 2, duplicates=1)
    second = await post_csv(
        client,
        acme,
        dispatch["id"],
        "email,external_id\nann@example.com,c-1\ncy@example.com,c-3\nbob@example.com,c-2\n",
    )
    assert second.status_code == 202, second.text
    assert second.json()["counts"] == counts(3, 1, duplicates=2)
    third = await post_json(
        client, acme, dispatch["id"], [{"email": "ann@example.com", "external_id": "c-1"}]
    )
    assert third.json()["counts"] == counts(1, 0, duplicates=1)

    (invite,) = await invites_by_external_id(client, acme, "c-1", dispatch["id"])
    assert invite["batch"] == first.json()["batch"]
    assert len(await invites_by_external_id(client, acme, "c-2", dispatch["id"])) == 1
    assert len(await invites_by_external_id(client, acme, "c-3", dispatch["id"])) == 1
    assert await count_rows(context, Invite, dispatch["id"]) == 3
    assert (await get_batch(client, acme, second.json()["batch"]))["counts"]["duplicates"] == 2
    # The first row of the file wins: the invite holds ann's address, not the later row's.
    rows = {row.external_id: row for row in await invite_rows(context, dispatch["id"])}
    assert rows["c-1"].contact is not None
    opened = open_contact(context.cipher, rows["c-1"].id, rows["c-1"].contact)
    assert opened["email"] == "ann@example.com"


async def test_same_external_id_in_another_dispatch_is_another_invite(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, one = await make_dispatch(client, acme)
    _, two = await make_dispatch(client, acme, name="Other", questionnaire="q-2")
    for dispatch in (one, two):
        response = await post_csv(client, acme, dispatch["id"], "email,external_id\na@b.com,c-1\n")
        assert response.json()["counts"] == counts(1, 1)
    found = (await client.get(f"{ACME}/invites?external_id=c-1", headers=acme)).json()
    assert sorted(i["dispatch"] for i in found) == sorted([one["id"], two["id"]])


# --- encryption at rest ---------------------------------------------------------------------------


SECRET_EMAIL = "secret.person@example.com"
SECRET_PHONE = "+33612345678"
SECRET_ATTRIBUTE = "ultramarine-zebra-4711"


def leaks(value: object) -> list[str]:
    text_value = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    text_value = text_value.lower()
    needles = [SECRET_EMAIL, "secret.person", SECRET_PHONE, SECRET_PHONE[1:], SECRET_ATTRIBUTE]
    return [n for n in needles if n.lower() in text_value]


async def upload_secret_contact(
    client: httpx.AsyncClient, admin: dict[str, str], dispatch_id: str
) -> None:
    csv = (
        "Email,Mobile,external_id,favourite_colour\n"
        f"{SECRET_EMAIL},{SECRET_PHONE},c-secret,{SECRET_ATTRIBUTE}\n"
    )
    response = await post_csv(client, admin, dispatch_id, csv)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(1, 1)


async def test_addresses_and_attributes_are_encrypted_at_rest(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    await upload_secret_contact(client, acme, dispatch["id"])
    async with context.engine.connect() as connection:
        result = await connection.execute(text("SELECT * FROM invites"))
        columns = list(result.keys())
        rows = result.all()
    assert len(rows) == 1
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            assert leaks(value) == [], f"invites.{column} holds contact data in clear"
    (invite,) = await invite_rows(context, dispatch["id"])
    assert invite.contact is not None
    opened = open_contact(context.cipher, invite.id, invite.contact)
    assert opened["email"] == SECRET_EMAIL
    assert opened["mobile"] == SECRET_PHONE
    assert opened["attributes"] == {"favourite_colour": SECRET_ATTRIBUTE}
    # Bound to its invite: the ciphertext does not open under another invite's id.
    with pytest.raises(DecryptionError):
        open_contact(context.cipher, "inv_other", invite.contact)


async def test_no_table_keeps_contact_details_in_clear(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    await upload_secret_contact(client, acme, dispatch["id"])
    found: list[str] = []
    async with context.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            result = await connection.execute(text(f"SELECT * FROM {table.name}"))
            columns = list(result.keys())
            for row in result.all():
                for column, value in zip(columns, row, strict=True):
                    if leaks(value):
                        found.append(f"{table.name}.{column}")
    assert found == []


# --- whole-request errors ---------------------------------------------------------------------------


async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = dict(acme)
        if content_type:
            headers["Content-Type"] = content_type
        response = await client.post(
            f"{ACME}/dispatches/{dispatch['id']}/contacts",
            headers=headers,
            content=b"email\nann@example.com\n",
        )
        assert_problem(response, 415, "unsupported-media-type")
    assert await count_rows(context, Invite, dispatch["id"]) == 0


async def test_unknown_dispatch_and_other_accounts_dispatch_are_404(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    await setup_account(client, acme, "globex")
    _, theirs = await make_dispatch(client, acme, "globex")
    missing = await post_csv(client, acme, "dsp_does_not_exist", "email\nann@example.com\n")
    assert_problem(missing, 404, "not-found")
    other = await post_csv(client, acme, theirs["id"], "email\nann@example.com\n")
    assert_problem(other, 404, "not-found")
    other_json = await post_json(client, acme, theirs["id"], [{"email": "ann@example.com"}])
    assert_problem(other_json, 404, "not-found")
    assert await count_rows(context, Invite, theirs["id"]) == 0
    # Nor does acme read globex's batches.
    mine = await post_csv(
        client, acme, theirs["id"], "email,external_id\nann@example.com,g-1\n", account="globex"
    )
    assert mine.status_code == 202, mine.text
    response = await client.get(f"{ACME}/batches/{mine.json()['batch']}", headers=acme)
    assert_problem(response, 404, "not-found")
    assert_problem(await client.get(f"{ACME}/batches/bat_missing", headers=acme), 404, "not-found")
    # …nor globex's invites, by token, external id or id.
    (theirs_invite,) = (
        await client.get("/v1/accounts/globex/invites", headers=acme, params={"external_id": "g-1"})
    ).json()
    for params in ({"token": theirs_invite["token"]}, {"external_id": "g-1"}):
        found = await client.get(f"{ACME}/invites", headers=acme, params=params)
        assert found.status_code == 200
        assert found.json() == []
    response = await client.get(f"{ACME}/invites/{theirs_invite['id']}", headers=acme)
    assert_problem(response, 404, "not-found")


async def test_duplicate_header_name_fails_the_file_and_the_batch(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    csv = "email,external_id,Email\nann@example.com,c-1,ann@example.com\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    body = assert_problem(response, 422, "contact-file-unreadable")
    assert (body["status"], body["batch_status"]) == (422, "failed")
    assert body["instance"] == f"{ACME}/dispatches/{dispatch['id']}/contacts"
    assert body["errors"] == [{"field": "body", "reason": body["reason"]}]
    assert body["batch"]
    assert "ann@example.com" not in response.text
    batch = await get_batch(client, acme, body["batch"])
    assert batch["status"] == "failed"
    assert batch["error"] and "header" in batch["error"]
    assert batch["error"].startswith("row 1")
    assert batch["counts"] == counts(0, 0)
    assert batch["finished_at"] is not None
    assert await count_rows(context, Invite, dispatch["id"]) == 0


async def test_unreadable_file_keeps_the_rows_before_the_problem(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    body = (
        b"email,external_id\n"
        b"ann@example.com,c-1\n"
        b"bob@example.com,c-2\n"
        b"cy@example.com,c-\xff\xfe\n"  # row 4: not UTF-8
        b"di@example.com,c-4\n"
    )
    response = await post_csv(client, acme, dispatch["id"], body)
    problem = assert_problem(response, 422, "contact-file-unreadable")
    assert problem["counts"] == counts(2, 2)
    batch = await get_batch(client, acme, problem["batch"])
    assert batch["status"] == "failed"
    assert batch["error"] == "row 4: the file is not valid UTF-8"
    assert batch["counts"] == counts(2, 2)
    assert await count_rows(context, Invite, dispatch["id"]) == 2


async def test_upload_to_a_dispatch_with_an_empty_lineup_is_a_clear_answer(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    policy, dispatch = await make_dispatch(
        client, acme, lineup=[{"channel": "email", "delay": "PT0S"}]
    )
    step = policy["lineup"][0]["id"]
    deleted = await client.delete(
        f"{ACME}/policies/{policy['id']}/lineup/{step}", headers={**acme, "If-Match": "*"}
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["lineup"] == []
    try:
        response = await post_csv(client, acme, dispatch["id"], "email\nann@example.com\n")
        assert response.status_code in (202, 409, 422), response.text
    finally:
        async with context.engine.connect() as connection:
            statuses = (await connection.execute(text("SELECT status FROM contact_batches"))).all()
        assert ("processing",) not in statuses


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/csv", b""), ("application/json", b""), ("text/csv", b"\r\n\r\n")],
)
async def test_empty_body_is_422(
    client: httpx.AsyncClient, acme: dict[str, str], content_type: str, body: bytes
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await client.post(
        f"{ACME}/dispatches/{dispatch['id']}/contacts",
        headers={**acme, "Content-Type": content_type},
        content=body,
    )
    problem = assert_problem(response, 422, "contact-file-unreadable")
    batch = await get_batch(client, acme, problem["batch"])
    assert batch["status"] == "failed"
    assert batch["error"]


async def test_json_without_a_contacts_list_is_422(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    for document in ({"contacts": "ann@example.com"}, [{"email": "ann@example.com"}], {}):
        response = await client.post(
            f"{ACME}/dispatches/{dispatch['id']}/contacts", headers=acme, json=document
        )
        problem = assert_problem(response, 422, "contact-file-unreadable")
        assert "ann@example.com" not in response.text
        assert problem["batch"]
        assert (problem["field"], problem["errors"][0]["field"]) == ("contacts", "contacts")
        assert problem["reason"] == "must be a list of contact objects"


async def test_header_only_file_is_an_empty_completed_batch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(client, acme, dispatch["id"], "email,external_id\n")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["counts"] == counts(0, 0)


# --- streaming ----------------------------------------------------------------------------------------


STREAM_ROWS = 20_000
PIECE = 4096


def streamed_row(i: int) -> str:
    # Multi-byte characters, quoted delimiters and doubled quotes, so chunk ends fall inside
    # UTF-8 sequences, quoted fields and CRLF pairs.
    return f'p{i}@example.com,s-{i},"Zoë ""{i}"", Ünïcødé, ☃",{i % 7}\r\n'


async def test_a_large_csv_streamed_in_small_chunks_is_fully_accepted(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    header = b"email,external_id,name,segment\r\n"
    lines = [streamed_row(i).encode() for i in range(STREAM_ROWS)]
    payload = header + b"".join(lines)
    # Rows (by index) whose bytes span a chunk boundary.
    straddling: list[int] = []
    offset = len(header)
    for i, line in enumerate(lines):
        if offset // PIECE != (offset + len(line) - 1) // PIECE:
            straddling.append(i)
        offset += len(line)
    assert len(straddling) > 100
    pieces_sent = 0

    async def pieces() -> AsyncIterator[bytes]:
        nonlocal pieces_sent
        for start in range(0, len(payload), PIECE):
            pieces_sent += 1
            yield payload[start : start + PIECE]

    response = await client.post(
        f"{ACME}/dispatches/{dispatch['id']}/contacts",
        headers={**acme, **CSV},
        content=pieces(),
    )
    assert response.status_code == 202, response.text
    assert pieces_sent == -(-len(payload) // PIECE)
    body = response.json()
    assert body["status"] == "completed"
    assert body["counts"] == counts(STREAM_ROWS, STREAM_ROWS)
    assert await count_rows(context, Invite, dispatch["id"]) == STREAM_ROWS

    checked = [*straddling[:3], straddling[len(straddling) // 2], straddling[-1], STREAM_ROWS - 1]
    invite_ids = {}
    for i in checked:
        (invite,) = await invites_by_external_id(client, acme, f"s-{i}", dispatch["id"])
        invite_ids[i] = invite["id"]
    async with context.sessions() as session:
        for i in checked:
            row = await session.get(Invite, invite_ids[i])
            assert row is not None and row.contact is not None
            assert row.row_number == i + 2
            opened = open_contact(context.cipher, row.id, row.contact)
            assert opened["email"] == f"p{i}@example.com"
            assert opened["attributes"] == {
                "name": f'Zoë "{i}", Ünïcødé, ☃',
                "segment": str(i % 7),
            }


async def test_rows_are_stored_and_pollable_while_the_file_is_still_arriving(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    chunk_rows = context.settings.upload_batch_rows
    first_part = chunk_rows + chunk_rows // 4
    head = "email,external_id,name,segment\r\n" + "".join(
        streamed_row(i) for i in range(first_part)
    )
    tail = "".join(streamed_row(i) for i in range(first_part, first_part + 10))
    paused, release = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        data = head.encode()
        for start in range(0, len(data), PIECE):
            yield data[start : start + PIECE]
        paused.set()
        await release.wait()
        yield tail.encode()

    upload = asyncio.create_task(
        client.post(
            f"{ACME}/dispatches/{dispatch['id']}/contacts",
            headers={**acme, **CSV},
            content=body(),
        )
    )
    try:
        await asyncio.wait_for(paused.wait(), 30)
        async with context.engine.connect() as connection:
            (batch_id,) = (
                await connection.execute(
                    text("SELECT id FROM contact_batches WHERE dispatch_id = :d"),
                    {"d": dispatch["id"]},
                )
            ).one()
        # The first chunk commits while the rest of the file has not arrived.
        deadline = asyncio.get_running_loop().time() + 15
        batch = await get_batch(client, acme, batch_id)
        while batch["counts"]["rows"] < chunk_rows and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            batch = await get_batch(client, acme, batch_id)
        assert batch["status"] == "processing"
        assert batch["counts"] == counts(chunk_rows, chunk_rows)
        assert batch["finished_at"] is None
        assert await count_rows(context, Invite, dispatch["id"]) == chunk_rows
    finally:
        release.set()
    response = await upload
    assert response.status_code == 202, response.text
    assert response.json()["batch"] == batch_id
    assert response.json()["counts"] == counts(first_part + 10, first_part + 10)


# --- fatigue rule 1 (R-INV-2) ------------------------------------------------------------------------


async def lock_holders(context: AppContext, dispatch_id: str) -> list[Invite]:
    return [i for i in await invite_rows(context, dispatch_id) if i.fatigue_lock is not None]


async def test_two_rows_of_one_person_give_two_invites_and_one_lock(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    policy, dispatch = await make_dispatch(client, acme)
    csv = "email,external_id\nAnn@Example.com,c-1\nbob@example.com,c-2\nann@example.com,c-3\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(3, 3)
    invites = await invite_rows(context, dispatch["id"])
    assert len(invites) == 3
    holders = {i.external_id for i in invites if i.fatigue_lock is not None}
    assert holders == {"c-1", "c-2"}
    by_id = {i.external_id: i for i in invites}
    assert by_id["c-1"].uuid_hash == by_id["c-3"].uuid_hash  # the same person, normalised
    assert by_id["c-1"].uuid_hash != by_id["c-2"].uuid_hash

    # A later file for the same person under the same policy (another dispatch, another
    # questionnaire): no second holder.
    _, other = await make_dispatch(client, acme, policy=policy, questionnaire="q-2")
    later = await post_json(
        client, acme, other["id"], [{"email": "ANN@example.com", "external_id": "c-9"}]
    )
    assert later.status_code == 202, later.text
    assert await lock_holders(context, other["id"]) == []
    assert len(await invite_rows(context, other["id"])) == 1
    # Under another policy the same person gets a lock of its own.
    _, elsewhere = await make_dispatch(client, acme, name="Elsewhere", questionnaire="q-3")
    await post_json(
        client, acme, elsewhere["id"], [{"email": "ann@example.com", "external_id": "c-10"}]
    )
    assert [i.external_id for i in await lock_holders(context, elsewhere["id"])] == ["c-10"]


async def test_without_rule_1_no_invite_holds_a_lock(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme, fatigue={"pending_token": {"enabled": False}})
    csv = "email,external_id\nann@example.com,c-1\nann@example.com,c-2\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(2, 2)
    assert len(await invite_rows(context, dispatch["id"])) == 2
    assert await lock_holders(context, dispatch["id"]) == []


async def test_lock_follows_the_uuid_field(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme, fatigue={"uuid_field": "member_id"})
    csv = (
        "email,external_id,member_id\n"
        "ann@example.com,c-1,M-1\n"
        "ann.work@example.com,c-2,M-1\n"
        "ann@example.com,c-3,M-2\n"
    )
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    holders = {i.external_id for i in await lock_holders(context, dispatch["id"])}
    assert holders == {"c-1", "c-3"}


async def test_mobile_as_uuid_field_is_normalised_before_locking(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(
        client,
        acme,
        lineup=[{"channel": "sms", "delay": "PT0S"}],
        fatigue={"uuid_field": "mobile"},
    )
    contacts = [
        {"mobile": "+33612345678", "external_id": "c-1"},
        {"mobile": "+33 6 12 34 56 78", "external_id": "c-2", "email": "x@example.com"},
        {"mobile": "+1 415 555 2671", "external_id": "c-3"},
        {"email": "only@example.com", "external_id": "c-4"},
    ]
    response = await post_json(client, acme, dispatch["id"], contacts)
    assert response.status_code == 202, response.text
    assert response.json()["counts"] == counts(4, 3, rejected=1)
    assert response.json()["rejected_rows"][0]["row"] == 4
    holders = {i.external_id for i in await lock_holders(context, dispatch["id"])}
    assert holders == {"c-1", "c-3"}


async def test_an_expired_holder_gives_its_lock_to_the_next_file(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext, clock: FrozenClock
) -> None:
    _, dispatch = await make_dispatch(client, acme, validity="P6D")
    first = await post_csv(client, acme, dispatch["id"], "email,external_id\nann@example.com,c-1\n")
    assert first.status_code == 202, first.text
    clock.advance(timedelta(days=1))
    still = await post_csv(client, acme, dispatch["id"], "email,external_id\nann@example.com,c-2\n")
    assert still.status_code == 202, still.text
    assert {i.external_id for i in await lock_holders(context, dispatch["id"])} == {"c-1"}
    clock.advance(timedelta(days=6))  # c-1's token has expired
    later = await post_csv(client, acme, dispatch["id"], "email,external_id\nann@example.com,c-3\n")
    assert later.status_code == 202, later.text
    assert {i.external_id for i in await lock_holders(context, dispatch["id"])} == {"c-3"}


async def _last_analyze(context: AppContext) -> datetime | None:
    async with context.engine.connect() as connection:
        query = text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'messages'")
        value: datetime | None = (await connection.execute(query)).scalar_one()
        return value


async def test_a_large_upload_refreshes_the_planner_statistics(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    """Claims plan their index walk from these statistics (db/statistics.py)."""
    if context.engine.dialect.name != "postgresql":
        pytest.skip("planner statistics are PostgreSQL's")
    _, dispatch = await make_dispatch(client, acme)
    before = await _last_analyze(context)
    rows = context.settings.upload_batch_rows + 100
    body = "email,external_id\r\n" + "".join(f"s{i}@example.com,s-{i}\r\n" for i in range(rows))
    response = await client.post(
        f"{ACME}/dispatches/{dispatch['id']}/contacts", headers={**acme, **CSV}, content=body
    )
    assert response.status_code == 202, response.text
    assert response.json()["counts"]["accepted"] == rows
    for _ in range(50):  # the statistics view is updated a moment after ANALYZE ends
        after = await _last_analyze(context)
        if after is not None and (before is None or after > before):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"messages were not analyzed (last_analyze {before} → {after})")


async def test_an_overlong_idempotency_key_is_named_as_the_client_sent_it(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(
        client,
        acme,
        dispatch["id"],
        "email\nann@example.com\n",
        headers={"Idempotency-Key": "k" * 201},
    )
    assert assert_problem(response, 422, "validation-error")["field"] == "Idempotency-Key"


async def test_a_file_without_an_address_column_rejects_its_rows_not_the_file(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(
        client, acme, dispatch["id"], "first_name,city\nAnn,Paris\nBob,Rome\n"
    )
    assert response.status_code == 202, response.text  # R-INV-1: "without rejecting the file"
    body = response.json()
    assert body["counts"] == counts(2, 0, rejected=2)
    assert [r["row"] for r in body["rejected_rows"]] == [2, 3]
    assert await count_rows(context, Invite, dispatch["id"]) == 0
