"""A posted contact file, opened: what its columns were read as, and its rows.

Opening reads a CSV file up to the end of its header row (a JSON document whole, as it is
parsed in one piece) and refuses, before anything is stored, a file that cannot give a
single contact: an empty one, one that does not start with a header, one with no column
for any channel of the lineup, one whose header repeats a column. Bad rows of a file that
opens are still rejected one by one (R-INV-1) while it is stored. The same goes for a file
with no column for the policy's fatigue UUID field, which every row needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from dispatch_engine.errors import DomainError, FieldError
from dispatch_engine.ingest.columns import (
    EXPECTED_HEADER,
    KNOWN_COLUMNS,
    canonical_column,
    data_like,
    is_alias,
    missing_channel_column,
)
from dispatch_engine.ingest.csv_stream import (
    EMPTY_FILE,
    ROW_ERROR_KEY,
    CsvFormatError,
    open_csv_rows,
)
from dispatch_engine.schemas.contacts import ColumnsOut
from dispatch_engine.security.text import hostile_text_reason

__all__ = ["MAX_LISTED_COLUMNS", "ContactFile", "ContactFileRefused", "open_csv", "open_json"]

Row = tuple[int, dict[str, Any]]

#: Attribute names listed at most in `columns` (a CSV header has at most 200 columns; the
#: keys of JSON contacts have no such bound).
MAX_LISTED_COLUMNS = 200
_MAX_NAME_CHARS = 120  # a longer column name is listed cut short (its rows are rejected)
_NESTED_ATTRIBUTES = "attributes"


class ContactFileRefused(DomainError):
    """A contact file refused as a whole before anything was stored: no batch, no row, and
    an Idempotency-Key sent with it stays unused (as Stripe does for a request refused
    before it starts), so the corrected file can be posted with the same key."""

    def __init__(self, field: str, reason: str, **extra: Any) -> None:
        super().__init__(
            detail=f"{reason} (nothing was stored)",
            errors=[FieldError(field, reason)],
            extra=extra,
            status=422,
            slug="contact-file-refused",
            title="Contact file refused",
        )


@dataclass
class ContactFile:
    """An opened contact file: what its columns were read as, and its numbered rows."""

    columns: ColumnsOut
    rows: AsyncIterator[Row]


async def open_csv(
    chunks: AsyncIterator[bytes], channels: Iterable[str], uuid_field: str
) -> ContactFile:
    """Read a streamed CSV file's header; `ContactFileRefused` when it has no usable one,
    no address column for the lineup's `channels` or no column for the policy's
    `uuid_field`. The rows are read on from the stream."""
    try:
        header, rows = await open_csv_rows(chunks)
    except CsvFormatError as exc:
        reason = exc.reason if exc.reason == EMPTY_FILE else f"row {exc.row_number}: {exc.reason}"
        raise ContactFileRefused("body", reason, expected_header=EXPECTED_HEADER) from None
    seen = _Columns()
    for name in header.names:
        seen.add(name)
    columns = seen.report()
    if not columns.recognised:
        # No cell is quoted: a row that is not a header is a contact's data.
        raise ContactFileRefused(
            "body",
            f"row {header.row_number}: the first row is not a header: none of its "
            f"{len(header.names)} columns is one the service knows "
            f"({', '.join(sorted(KNOWN_COLUMNS))}, or an alias); the file must start with "
            f"a header row such as {EXPECTED_HEADER}",
            expected_header=EXPECTED_HEADER,
        )
    _require_columns(seen, channels, uuid_field)
    return ContactFile(columns, rows)


def open_json(data: bytes, channels: Iterable[str], uuid_field: str) -> ContactFile:
    """Parse a JSON document `{"contacts": [...]}`; `ContactFileRefused` when it is not one,
    or when none of its contacts has a key for an address of the lineup's `channels`, or
    for the policy's `uuid_field`."""
    if not data.strip():
        raise ContactFileRefused("body", 'the body is empty: expected {"contacts": [...]}')
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson also refuses invalid UTF-8 and lone surrogates: no row can be named then
        raise ContactFileRefused("body", "not valid JSON (or not valid UTF-8)") from None
    contacts = document.get("contacts") if isinstance(document, dict) else None
    if not isinstance(contacts, list):
        raise ContactFileRefused("contacts", "must be a list of contact objects")
    seen = _json_columns(contacts)
    if contacts:
        _require_columns(seen, channels, uuid_field)
    return ContactFile(seen.report(), _json_rows(contacts))


async def _json_rows(contacts: list[Any]) -> AsyncIterator[Row]:
    for index, contact in enumerate(contacts, start=1):
        if not isinstance(contact, dict):
            yield index, {ROW_ERROR_KEY: "each contact must be a JSON object"}
        else:
            yield index, contact


def _require_columns(seen: _Columns, channels: Iterable[str], uuid_field: str) -> None:
    """An address column for the lineup, and a column for the fatigue UUID field: without
    either, every row would be rejected."""
    reason = missing_channel_column(seen.recognised, channels)
    if reason is None and not seen.has(uuid_field):
        # The policy's field, not the file's content: it can be quoted.
        reason = (
            f"no column holds the policy's fatigue UUID field '{uuid_field}', which "
            f"identifies a person: the file needs a column {uuid_field}"
        )
    if reason is not None:
        raise ContactFileRefused(
            "body", reason, expected_header=EXPECTED_HEADER, columns=seen.report().model_dump()
        )


class _Columns:
    """Collects column names in the order first seen."""

    def __init__(self) -> None:
        self.recognised: dict[str, None] = {}
        self.attributes: dict[str, None] = {}
        self.aliases: dict[str, str] = {}
        self.more_attributes = False
        self._attribute_names: set[str] = set()  # all of them, listed or not

    def has(self, field: str) -> bool:
        """Whether a row may hold `field`: as a known column (or alias), or an attribute of
        exactly that name (as `rows.parse_contact` looks it up)."""
        column = canonical_column(field)
        if column in ("email", "mobile") and not is_alias(field):
            return column in self.recognised  # the address itself, never an attribute
        return (column is not None and column in self.recognised) or (
            field in self._attribute_names
        )

    def add(self, name: str, *, nested: bool = False) -> None:
        key = name.strip()
        if nested or canonical_column(key) is None:
            self._attribute_names.add(key)
        if hostile_text_reason(key) or data_like(key):
            # Rows are rejected for the first; the second is a contact's data, not a name
            # (JSON keys only: such a CSV header is refused). Neither is shown nor stored.
            return
        column = None if nested else canonical_column(key)
        if column is not None:
            self.recognised.setdefault(column, None)
            if is_alias(key):
                self.aliases.setdefault(key, column)
            return
        if len(key) > _MAX_NAME_CHARS:
            key = key[:_MAX_NAME_CHARS] + "…"  # its rows are rejected for the long name
        if not key or key == ROW_ERROR_KEY or key in self.attributes:
            return
        if len(self.attributes) >= MAX_LISTED_COLUMNS:
            self.more_attributes = True
            return
        self.attributes[key] = None

    def report(self) -> ColumnsOut:
        return ColumnsOut(
            recognised=list(self.recognised),
            attributes=list(self.attributes),
            aliases=self.aliases,
            more_attributes=self.more_attributes,
        )


def _json_columns(contacts: list[Any]) -> _Columns:
    """The keys seen across the contacts (an `attributes` object's keys are attributes)."""
    seen = _Columns()
    names: set[str] = set()
    nested_names: set[str] = set()
    for contact in contacts:
        if not isinstance(contact, dict):
            continue
        for key, value in contact.items():
            if key.strip() == _NESTED_ATTRIBUTES and (value is None or isinstance(value, dict)):
                for nested in value or ():
                    if nested not in nested_names:
                        nested_names.add(nested)
                        seen.add(nested, nested=True)
            elif key not in names:
                names.add(key)
                seen.add(key)
    return seen
