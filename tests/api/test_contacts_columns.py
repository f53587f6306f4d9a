"""Contact files say what they understood (issue 20, R-INV-1): a file that does not start
with a header, or has no address column for the lineup, is refused before anything is
stored; documented aliases are read as the known columns; the answer (and the batch) says
which columns were recognised and which became attributes. CSV and JSON alike.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dispatch_engine.context import AppContext
from dispatch_engine.models import ContactBatch, IdempotencyKey, Invite
from dispatch_engine.security.sealing import open_contact
from tests.helpers import (
    assert_problem,
    count_rows,
    counts,
    get_batch,
    invite_rows,
    make_dispatch,
    post_csv,
    post_json,
)

EXPECTED = "external_id,email,mobile,time_zone"
EMAIL_ONLY = [{"channel": "email", "delay": "PT0S"}]
SMS_ONLY = [{"channel": "sms", "delay": "PT0S"}]


async def nothing_stored(context: AppContext, dispatch_id: str) -> None:
    assert await count_rows(context, ContactBatch, dispatch_id) == 0
    assert await count_rows(context, Invite, dispatch_id) == 0


# --- a file that does not start with a header ----------------------------------------------


@pytest.mark.parametrize(
    ("csv", "looks"),
    [
        ("ann@example.com,+33612345678,c-1\nbob@example.com,,c-2\n", "an email address"),
        ("c-1,+33 6 12 34 56 78,ann@example.com\n", "a phone number"),
        ("\n\nAnn,bob@example.com\n", "an email address"),
    ],
)
async def test_a_file_whose_first_row_is_data_is_refused_with_the_expected_header(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext, csv: str, looks: str
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(client, acme, dispatch["id"], csv)
    problem = assert_problem(response, 422, "contact-file-refused")
    assert "the first row is not a header" in problem["reason"]
    assert looks in problem["reason"]
    assert EXPECTED in problem["reason"] and problem["expected_header"] == EXPECTED
    assert "nothing was stored" in problem["detail"]
    for secret in ("ann@example.com", "bob@example.com", "612345678", "c-1", "Ann"):
        assert secret not in response.text
    assert "batch" not in problem and "columns" not in problem
    await nothing_stored(context, dispatch["id"])


async def test_a_first_row_without_any_known_column_is_not_taken_as_a_header(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(client, acme, dispatch["id"], "Ann,Smith,Paris\nBob,Jones,Rome\n")
    problem = assert_problem(response, 422, "contact-file-refused")
    assert problem["reason"].startswith("row 1: the first row is not a header")
    assert "none of its 3 columns" in problem["reason"] and EXPECTED in problem["reason"]
    for secret in ("Ann", "Smith", "Paris"):
        assert secret not in response.text
    await nothing_stored(context, dispatch["id"])


# --- a header without an address column for the lineup ---------------------------------------


@pytest.mark.parametrize(
    ("lineup", "header", "needed"),
    [
        (EMAIL_ONLY, "mobile,external_id", "email messages: the file needs a column email"),
        (SMS_ONLY, "email,external_id", "sms messages: the file needs a column mobile"),
        (None, "external_id,first_name", "email messages and sms messages"),
    ],
)
async def test_a_header_without_a_column_for_the_lineups_channels_is_refused(
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    lineup: list[dict[str, str]] | None,
    header: str,
    needed: str,
) -> None:
    _, dispatch = await make_dispatch(client, acme, **({"lineup": lineup} if lineup else {}))
    csv = f"{header}\n+33612345678,c-1\n" if header.startswith("mobile") else f"{header}\nx,y\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    problem = assert_problem(response, 422, "contact-file-refused")
    assert needed in problem["reason"], problem["reason"]
    assert problem["columns"]["recognised"] == [c for c in header.split(",") if c != "first_name"]
    await nothing_stored(context, dispatch["id"])


async def test_one_address_column_of_two_channels_is_enough_and_rows_without_it_are_rejected(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    # email and sms messages; people known by their mobile
    _, dispatch = await make_dispatch(client, acme, fatigue={"uuid_field": "mobile"})
    csv = "mobile,external_id\n+33612345678,c-1\n,c-2\n"
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["counts"] == counts(2, 1, rejected=1)
    assert [(r["row"], r["field"]) for r in body["rejected_rows"]] == [(3, "email/mobile")]


@pytest.mark.parametrize(
    ("uuid_field", "header", "refused"),
    [
        ("member_id", "email,external_id", True),
        ("member_id", "email,member_id", False),
        ("email", "mobile,external_id", True),  # the default: people known by their email
        ("phone", "email,mobile", False),  # an alias of the mobile column
        ("id", "email,external_id", False),
    ],
)
async def test_a_file_without_a_column_for_the_fatigue_uuid_field_is_refused(
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    uuid_field: str,
    header: str,
    refused: bool,
) -> None:
    _, dispatch = await make_dispatch(client, acme, fatigue={"uuid_field": uuid_field})
    row = "+33612345678,c-1" if header.startswith("mobile") else "ann@example.com,+33612345678"
    response = await post_csv(client, acme, dispatch["id"], f"{header}\n{row}\n")
    if not refused:
        assert response.status_code == 202, response.text
        assert response.json()["counts"] == counts(1, 1)
        return
    problem = assert_problem(response, 422, "contact-file-refused")
    assert f"fatigue UUID field '{uuid_field}'" in problem["reason"]
    await nothing_stored(context, dispatch["id"])


# --- aliases and the columns answer ------------------------------------------------------------


async def test_aliases_are_read_as_the_known_columns_and_the_answer_says_so(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    csv = (
        " E-Mail ,Phone,ID,TimeZone,first_name,Plan Level\n"
        "ann@example.com,+33612345678,c-1,Europe/Paris,Ann,gold\n"
    )
    response = await post_csv(client, acme, dispatch["id"], csv)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["counts"] == counts(1, 1)
    columns = {
        "recognised": ["email", "mobile", "external_id", "time_zone"],
        "attributes": ["first_name", "Plan Level"],
        "aliases": {
            "E-Mail": "email",
            "Phone": "mobile",
            "ID": "external_id",
            "TimeZone": "time_zone",
        },
        "more_attributes": False,
    }
    assert body["columns"] == columns
    assert (await get_batch(client, acme, body["batch"]))["columns"] == columns

    (invite,) = await invite_rows(context, dispatch["id"])
    assert (invite.external_id, invite.time_zone) == ("c-1", "Europe/Paris")
    opened = open_contact(context.cipher, invite.id, invite.contact)
    assert (opened["email"], opened["mobile"]) == ("ann@example.com", "+33612345678")
    assert opened["attributes"] == {"first_name": "Ann", "Plan Level": "gold"}


@pytest.mark.parametrize(
    "header",
    ["email,mobile_number", "email,Mobile Phone", "email,phone_number", "Email Address,mobile"],
)
async def test_every_documented_alias_is_accepted(
    client: httpx.AsyncClient, acme: dict[str, str], header: str
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(
        client, acme, dispatch["id"], f"{header}\nann@example.com,+33612345678\n"
    )
    assert response.status_code == 202, response.text
    assert response.json()["columns"]["recognised"] == ["email", "mobile"]
    assert response.json()["columns"]["attributes"] == []


async def test_plain_columns_give_an_answer_without_aliases(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(
        client, acme, dispatch["id"], "email,external_id\nann@example.com,c-1\n"
    )
    assert response.status_code == 202, response.text
    assert response.json()["columns"] == {
        "recognised": ["email", "external_id"],
        "attributes": [],
        "aliases": {},
        "more_attributes": False,
    }


@pytest.mark.parametrize(
    ("header", "first", "second", "column"),
    [
        ("email,phone,mobile", "phone", "mobile", "mobile"),
        ("ID,email,external_id", "ID", "external_id", "external_id"),
        ("e-mail,Email_Address", "e-mail", "Email_Address", "email"),
    ],
)
async def test_a_column_given_twice_through_an_alias_is_refused_naming_both(
    client: httpx.AsyncClient,
    acme: dict[str, str],
    context: AppContext,
    header: str,
    first: str,
    second: str,
    column: str,
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    response = await post_csv(client, acme, dispatch["id"], f"{header}\na,b,c\n")
    problem = assert_problem(response, 422, "contact-file-refused")
    assert f"('{first}')" in problem["reason"] and f"('{second}')" in problem["reason"]
    assert f"both the {column} column" in problem["reason"]
    await nothing_stored(context, dispatch["id"])


async def test_a_refused_file_leaves_its_idempotency_key_free_for_the_corrected_file(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "file-7"}
    refused = await post_csv(client, acme, dispatch["id"], "ann@example.com\n", headers=key)
    assert_problem(refused, 422, "contact-file-refused")
    assert "Idempotent-Replayed" not in refused.headers
    async with context.sessions() as session:
        assert await session.get(IdempotencyKey, ("acme", "file-7")) is None
    fixed = "email\nann@example.com\n"
    accepted = await post_csv(client, acme, dispatch["id"], fixed, headers=key)
    assert accepted.status_code == 202, accepted.text
    replay = await post_csv(client, acme, dispatch["id"], fixed, headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == accepted.json()
    assert replay.json()["columns"]["recognised"] == ["email"]


# --- JSON contacts ------------------------------------------------------------------------------


async def test_json_contacts_get_the_same_aliases_and_columns_answer(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    contacts: list[Any] = [
        {"E-mail": "ann@example.com", "id": "j-1", "tier": "gold"},
        {"email": "bob@example.com", "Phone": "+14155552671", "attributes": {"plan": "b"}},
        {"phone": "+33612345678", "mobile": "+33612345679"},
        "not an object",
    ]
    response = await post_json(client, acme, dispatch["id"], contacts)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["counts"] == counts(4, 2, rejected=2)
    assert body["columns"] == {
        "recognised": ["email", "external_id", "mobile"],
        "attributes": ["tier", "plan"],
        "aliases": {"E-mail": "email", "id": "external_id", "Phone": "mobile", "phone": "mobile"},
        "more_attributes": False,
    }
    assert (await get_batch(client, acme, body["batch"]))["columns"] == body["columns"]
    rejected = {r["row"]: r for r in body["rejected_rows"]}
    assert rejected[3]["field"] == "mobile"
    assert rejected[3]["reason"] == (
        "the column is given more than once: as 'phone' and as 'mobile'"
    )
    rows = {row.external_id: row for row in await invite_rows(context, dispatch["id"])}
    assert set(rows) == {"j-1", None}
    opened = open_contact(context.cipher, rows["j-1"].id, rows["j-1"].contact)
    assert opened["email"] == "ann@example.com"
    assert opened["attributes"] == {"tier": "gold"}


async def test_json_contacts_without_any_address_key_are_refused(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme, lineup=EMAIL_ONLY)
    contacts = [{"mobile": "+33612345678", "external_id": "j-1"}, {"name": "Bob"}]
    response = await post_json(client, acme, dispatch["id"], contacts)
    problem = assert_problem(response, 422, "contact-file-refused")
    assert "email messages: the file needs a column email" in problem["reason"]
    assert problem["columns"]["recognised"] == ["mobile", "external_id"]
    assert problem["columns"]["attributes"] == ["name"]
    await nothing_stored(context, dispatch["id"])
    # An empty list stores an empty batch, as before.
    empty = await post_json(client, acme, dispatch["id"], [])
    assert empty.status_code == 202, empty.text
    assert empty.json()["columns"]["recognised"] == []


async def test_json_attribute_names_listed_are_bounded(
    client: httpx.AsyncClient, acme: dict[str, str]
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    contacts = [{"email": f"p{i}@example.com", f"k{i}": "v"} for i in range(250)]
    response = await post_json(client, acme, dispatch["id"], contacts)
    assert response.status_code == 202, response.text
    columns = response.json()["columns"]
    assert len(columns["attributes"]) == 200 and columns["more_attributes"] is True
