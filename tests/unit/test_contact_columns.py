"""The columns of a contact file (issue 20): aliases, what looks like data instead of a
header, and a CSV file's header read before any of its rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dispatch_engine.ingest.columns import (
    ALIASES,
    EXPECTED_HEADER,
    canonical_column,
    data_like,
    missing_channel_column,
)
from dispatch_engine.ingest.csv_stream import CsvFormatError, CsvHeader, open_csv_rows
from dispatch_engine.ingest.rows import ContactIn, Rejection, parse_contact

BOTH = frozenset({"email", "sms"})


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("email", "email"),
        (" EMAIL ", "email"),
        ("E-Mail", "email"),
        ("email address", "email"),
        ("Email_Address", "email"),
        ("phone", "mobile"),
        ("Phone Number", "mobile"),
        ("mobile-number", "mobile"),
        ("Mobile Phone", "mobile"),
        ("ID", "external_id"),
        ("External ID", "external_id"),
        ("TimeZone", "time_zone"),
        ("time zone", "time_zone"),
        ("first_name", None),
        ("mail", None),
        ("identifier", None),
        ("phones", None),
    ],
)
def test_canonical_column(name: str, column: str | None) -> None:
    assert canonical_column(name) == column


def test_aliases_name_only_known_columns() -> None:
    assert set(ALIASES.values()) <= {"email", "mobile", "external_id", "time_zone"}
    assert EXPECTED_HEADER == "external_id,email,mobile,time_zone"


@pytest.mark.parametrize(
    ("cell", "looks"),
    [
        ("ann@example.com", "an email address"),
        (" ann.smith+tag@mail.example ", "an email address"),
        ("+33612345678", "a phone number"),
        ("+1 (415) 555-2671", "a phone number"),
        ("0612345678", "a phone number"),
        ("email", None),
        ("2024", None),
        ("q1-2025", None),
        ("@handle", None),
        ("", None),
    ],
)
def test_data_like(cell: str, looks: str | None) -> None:
    assert data_like(cell) == looks


def test_missing_channel_column() -> None:
    assert missing_channel_column(["email"], {"email"}) is None
    assert missing_channel_column(["mobile"], BOTH) is None
    reason = missing_channel_column(["external_id"], {"sms"})
    assert reason is not None and "sms messages" in reason and "a column mobile (or phone" in reason


# --- the header of a streamed CSV file ---------------------------------------------------------


class Chunks:
    """A body in pieces that counts how many were read."""

    def __init__(self, *parts: bytes) -> None:
        self.parts = list(parts)
        self.read = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self.read == len(self.parts):
            raise StopAsyncIteration
        self.read += 1
        return self.parts[self.read - 1]


def test_the_header_is_read_before_the_rest_of_the_file() -> None:
    async def run() -> None:
        chunks = Chunks(b"\nE-mail,Ph", b"one,plan\nann@example.com,+3361", b"2345678,gold\n", b"x")
        header, rows = await open_csv_rows(chunks)
        assert header == CsvHeader(2, ("E-mail", "Phone", "plan"), ("email", "mobile", "plan"))
        assert chunks.read == 2
        got = [item async for item in rows]
        assert got == [
            (3, {"email": "ann@example.com", "mobile": "+33612345678", "plan": "gold"}),
            (4, {"email": "x", "mobile": "", "plan": ""}),
        ]
        assert chunks.read == 4

    asyncio.run(run())


def test_an_error_after_the_header_in_the_first_chunk_comes_with_the_rows() -> None:
    async def run() -> None:
        header, rows = await open_csv_rows(Chunks(b"email\na@example.com\nb\xff\n"))
        assert header.keys == ("email",)
        got = []
        with pytest.raises(CsvFormatError) as raised:
            async for item in rows:
                got.append(item)
        assert got == [(2, {"email": "a@example.com"})]
        assert raised.value.row_number == 3

    asyncio.run(run())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "the file is empty: expected a header row such as " + EXPECTED_HEADER),
        (
            b"ann@example.com,c-1\n",
            "the first row is not a header: its column 1 holds what looks like an email "
            "address; the file must start with a header row such as " + EXPECTED_HEADER,
        ),
        (
            b"phone,email,mobile\n",
            "header columns 1 ('phone') and 3 ('mobile') are both the mobile column: "
            "keep one of them",
        ),
        (b"ann,ann\n", "header column 2 repeats the name of an earlier column"),
    ],
)
def test_a_header_that_cannot_be_used_fails_before_any_row(data: bytes, reason: str) -> None:
    with pytest.raises(CsvFormatError) as raised:
        asyncio.run(open_csv_rows(Chunks(data)))
    assert raised.value.reason == reason
    assert "ann@example.com" not in str(raised.value)


# --- a contact's keys (JSON) ---------------------------------------------------------------------


def test_json_keys_are_aliased() -> None:
    contact = parse_contact(
        1,
        {"E-Mail": "Ann@Example.com", "phone": "+33612345678", "id": "c-1", "tz": "x"},
        channels=BOTH,
        uuid_field="email",
    )
    assert isinstance(contact, ContactIn)
    assert (contact.email, contact.mobile, contact.external_id) == (
        "ann@example.com",
        "+33612345678",
        "c-1",
    )
    assert contact.attributes == {"tz": "x"}


def test_a_json_contact_giving_a_column_twice_through_an_alias_is_rejected_naming_both() -> None:
    rejected = parse_contact(
        4, {"mobile": "+33612345678", "Phone": ""}, channels=BOTH, uuid_field="mobile"
    )
    assert rejected == Rejection(
        4, "mobile", "the column is given more than once: as 'mobile' and as 'Phone'"
    )


@pytest.mark.parametrize(
    ("row", "uuid_field", "value"),
    [
        ({"email": "a@example.com", "phone": "+33 6 12 34 56 78"}, "phone", "+33612345678"),
        ({"email": "a@example.com", "attributes": {"phone": "X-1"}}, "phone", "x-1"),
        ({"email": "a@example.com", "id": "CRM-9"}, "id", "crm-9"),
        ({"email": "a@example.com", "attributes": {"email": "other"}}, "email", "a@example.com"),
    ],
)
def test_the_uuid_field_follows_aliases(
    row: dict[str, object], uuid_field: str, value: str
) -> None:
    contact = parse_contact(1, row, channels=BOTH, uuid_field=uuid_field)
    assert isinstance(contact, ContactIn), contact
    assert contact.uuid_value == value
