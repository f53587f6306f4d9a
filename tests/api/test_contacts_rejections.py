"""What a contact upload refuses (R-INV-1, §8 contacts).

Bad rows are rejected one by one with their spreadsheet row number and reason, and listed
page by page; whole-request errors (content type, unknown dispatch, a broken or empty
file, an empty lineup) are problems. A file refused as a whole from its start (empty, no
header, a column given twice) stores nothing, not even a batch (issue 20); the rows before
a broken line further on are kept.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from dispatch_engine.context import AppContext
from dispatch_engine.models import ContactBatch, Invite
from tests.conftest import setup_account
from tests.helpers import (
    ACME,
    assert_problem,
    count_rows,
    counts,
    get_batch,
    invites_by_external_id,
    make_dispatch,
    post_csv,
    post_json,
)

EMAIL_ONLY = [{"channel": "email", "delay": "PT0S"}, {"channel": "email", "delay": "P2D"}]


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


async def test_duplicate_header_name_refuses_the_file_before_its_batch(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    # Issue 20: a header refused is refused before anything is stored (it used to fail a
    # batch created for it).
    _, dispatch = await make_dispatch(client, acme)
    csv = "email,external_id,Email\nann@example.com,c-1,ann@example.com\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    body = assert_problem(response, 422, "contact-file-refused")
    assert body["instance"] == f"{ACME}/dispatches/{dispatch['id']}/contacts"
    assert body["errors"] == [{"field": "body", "reason": body["reason"]}]
    assert body["reason"].startswith("row 1: header columns 1 ('email') and 3 ('Email')")
    assert "batch" not in body
    assert "ann@example.com" not in response.text
    assert await count_rows(context, ContactBatch, dispatch["id"]) == 0
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
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    content_type: str,
    body: bytes,
) -> None:
    # Issue 20: an empty file is said to be one, and stores nothing (it used to fail a batch
    # "with the rows before it stored").
    _, dispatch = await make_dispatch(client, acme)
    response = await client.post(
        f"{ACME}/dispatches/{dispatch['id']}/contacts",
        headers={**acme, "Content-Type": content_type},
        content=body,
    )
    problem = assert_problem(response, 422, "contact-file-refused")
    if content_type == "text/csv":
        assert problem["reason"] == (
            "the file is empty: expected a header row such as external_id,email,mobile,time_zone"
        )
        assert problem["expected_header"] == "external_id,email,mobile,time_zone"
    else:
        assert problem["reason"] == 'the body is empty: expected {"contacts": [...]}'
    assert "rows before it" not in problem["detail"]
    assert "batch" not in problem
    assert await count_rows(context, ContactBatch, dispatch["id"]) == 0


async def test_json_without_a_contacts_list_is_422(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    for document in ({"contacts": "ann@example.com"}, [{"email": "ann@example.com"}], {}):
        response = await client.post(
            f"{ACME}/dispatches/{dispatch['id']}/contacts", headers=acme, json=document
        )
        # Issue 20: refused before its batch (it used to fail a batch created for it).
        problem = assert_problem(response, 422, "contact-file-refused")
        assert "ann@example.com" not in response.text
        assert "batch" not in problem
        assert (problem["field"], problem["errors"][0]["field"]) == ("contacts", "contacts")
        assert problem["reason"] == "must be a list of contact objects"
    assert await count_rows(context, ContactBatch, dispatch["id"]) == 0


async def test_header_only_file_is_an_empty_completed_batch(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(client, acme, dispatch["id"], "email,external_id\n")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["counts"] == counts(0, 0)


async def test_a_file_without_an_address_column_is_refused_before_its_rows(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    # Issue 20 (docs/decisions.md): no row of such a file could be accepted, so the file is
    # refused up front (it used to be read, every row rejected on its own). Rows that lack
    # the address in a file that has the column are still rejected one by one.
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(
        client, acme, dispatch["id"], "external_id,city\nc-1,Paris\nc-2,Rome\n"
    )
    problem = assert_problem(response, 422, "contact-file-refused")
    assert "no column holds an address" in problem["reason"]
    assert problem["columns"]["recognised"] == ["external_id"]
    assert problem["columns"]["attributes"] == ["city"]
    assert await count_rows(context, ContactBatch, dispatch["id"]) == 0
    assert await count_rows(context, Invite, dispatch["id"]) == 0
