"""Streaming CSV reader for contact files.

Contact files can be of any size (R-INV-1), so they are read from an async stream of byte
chunks and never held whole in memory. Chunks may end anywhere: inside a multi-byte UTF-8
character, between the CR and LF of a line ending, or inside a quoted field that spans lines.

The layers are:

* an incremental UTF-8 decoder (``utf-8-sig``, so a leading BOM is dropped even when it is
  split across chunks);
* a line splitter that recognises ``\\r\\n``, ``\\r`` and ``\\n`` exactly as
  ``io.StringIO(text, newline="")`` does, holding back a trailing ``\\r`` until it knows
  whether an ``\\n`` follows;
* a record assembler that tracks, per physical line, whether the :mod:`csv` module would still
  be inside a quoted field, so that only *complete* records are handed to :func:`csv.reader`
  (which does the actual parsing, so the result equals ``csv.reader`` over the whole text);
* a row builder that applies the header, the limits and the row numbering.

Row numbers follow what a spreadsheet user sees: every record counts (blank ones too), the
header is row 1 and the first data row is row 2.

Errors never quote file content: it is personal data.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dispatch_engine.ingest.columns import (
    EXPECTED_HEADER,
    KNOWN_COLUMNS,
    canonical_column,
    data_like,
)

__all__ = [
    "EMPTY_FILE",
    "KNOWN_COLUMNS",
    "ROW_ERROR_KEY",
    "CsvFormatError",
    "CsvHeader",
    "iter_csv_rows",
    "open_csv_rows",
    "sniff_dialect_delimiter",
]

#: The reason given for a file without a header row (nothing in it but blank rows).
EMPTY_FILE = f"the file is empty: expected a header row such as {EXPECTED_HEADER}"

#: Key added to a yielded row that cannot be used, with a reason, so only that row is rejected.
ROW_ERROR_KEY = "__error__"

_LINE_END = re.compile(r"(\r\n|\r|\n)")
_QUOTE = '"'


class CsvFormatError(ValueError):
    """The file as a whole cannot be read; ``reason`` never contains file content."""

    def __init__(self, reason: str, row_number: int) -> None:
        super().__init__(f"row {row_number}: {reason}")
        self.reason = reason
        self.row_number = row_number


def sniff_dialect_delimiter(header_line: str) -> str:
    """Pick the delimiter from the header line: comma unless only ``;`` or tabs are present.

    Spreadsheets in many locales export with ``;``, and TSV exports use tabs; a header line
    that contains a comma is taken as comma-separated.
    """
    if "," in header_line:
        return ","
    semicolons = header_line.count(";")
    tabs = header_line.count("\t")
    if semicolons == 0 and tabs == 0:
        return ","
    return "\t" if tabs > semicolons else ";"


def _ends_inside_quotes(line: str, in_quotes: bool, delimiter: str) -> bool:
    """Whether :mod:`csv` (default dialect, non-strict) is inside a quoted field after ``line``.

    Mirrors the states of CPython's ``_csv`` parser: a quote opens a quoted field only at the
    start of a field; ``""`` inside a quoted field is an escaped quote; after a closing quote
    any other character turns the rest of the field into literal text.
    """
    body = line.rstrip("\r\n")
    end = len(body)
    pos = 0
    quoted = in_quotes
    while True:
        if quoted:
            quote = body.find(_QUOTE, pos)
            if quote < 0:
                return True
            if quote + 1 < end and body[quote + 1] == _QUOTE:
                pos = quote + 2
                continue
            quoted = False
            pos = quote + 1
            if pos >= end:
                return False
            if body[pos] != delimiter:
                # Non-strict csv keeps the rest of this field as literal text, quotes included.
                nxt = body.find(delimiter, pos)
                if nxt < 0:
                    return False
                pos = nxt
            pos += 1
            continue
        if pos >= end:
            return False
        if body[pos] == _QUOTE:
            quoted = True
            pos += 1
            continue
        nxt = body.find(delimiter, pos)
        if nxt < 0:
            return False
        pos = nxt + 1


class _RecordSplitter:
    """Turns decoded text, fed in arbitrary pieces, into CSV records (lists of cells)."""

    def __init__(self, delimiter: str | None, max_record_chars: int) -> None:
        self.delimiter = delimiter
        self.records_done = 0
        #: After the final feed: the last record ended inside an unclosed quoted field.
        self.unterminated = False
        self._max_record_chars = max_record_chars
        self._tail: list[str] = []
        self._tail_len = 0
        self._record: list[str] = []
        self._record_len = 0
        self._in_quotes = False

    def feed(self, text: str, out: list[list[str]], *, final: bool = False) -> None:
        """Append every record completed by ``text`` to ``out`` (even if an error follows)."""
        lines = self._lines(text, final=final)
        if lines:
            self._assemble(lines, out)
        if final and self._record:
            # EOF inside a quoted field: csv.reader keeps the partial field, so do the same
            # and let the row builder flag it.
            pending = self._record
            self._record = []
            self._record_len = 0
            self._parse(pending, out)
            self.unterminated = True

    def _too_long(self) -> CsvFormatError:
        return CsvFormatError(
            "a row is longer than the size limit (or a quoted field is never closed)",
            self.records_done + 1,
        )

    def _lines(self, text: str, *, final: bool) -> list[str]:
        """Complete physical lines (with their endings); keeps the unfinished rest."""
        held_cr = bool(self._tail) and self._tail[-1].endswith("\r")
        if "\n" not in text and "\r" not in text and not held_cr:
            if text:
                self._tail.append(text)
                self._tail_len += len(text)
                if self._tail_len + self._record_len > self._max_record_chars:
                    raise self._too_long()
            if not final or not self._tail:
                return []
            rest = "".join(self._tail)
            self._tail = []
            self._tail_len = 0
            return [rest]
        if self._tail:
            self._tail.append(text)
            text = "".join(self._tail)
            self._tail = []
            self._tail_len = 0
        parts = _LINE_END.split(text)
        rest = parts[-1]
        lines = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
        if not final and not rest and parts[-2] == "\r":
            # The LF of a CRLF may be in the next chunk: wait before ending this line.
            rest = lines.pop()
        if rest:
            if final:
                lines.append(rest)
            else:
                self._tail = [rest]
                self._tail_len = len(rest)
        return lines

    def _assemble(self, lines: list[str], out: list[list[str]]) -> None:
        """Group physical lines into complete records and parse them in one batch."""
        if self.delimiter is None:
            lines = self._before_header(lines, out)
            if not lines:
                return
        delimiter = self.delimiter
        assert delimiter is not None
        batch: list[str] = []
        if not self._in_quotes and all(_QUOTE not in line for line in lines):
            batch = lines
        else:
            for line in lines:
                if not self._in_quotes and _QUOTE not in line:
                    batch.append(line)
                    continue
                self._in_quotes = _ends_inside_quotes(line, self._in_quotes, delimiter)
                self._record.append(line)
                self._record_len += len(line)
                if self._in_quotes:
                    if self._record_len > self._max_record_chars:
                        self._parse(batch, out)
                        raise self._too_long()
                    continue
                batch.extend(self._record)
                self._record = []
                self._record_len = 0
        if any(len(line) > self._max_record_chars for line in batch):
            # Only reachable within one huge chunk; streamed lines are checked in _lines.
            self._parse(
                batch[: next(i for i, s in enumerate(batch) if len(s) > self._max_record_chars)],
                out,
            )
            raise self._too_long()
        self._parse(batch, out)

    def _before_header(self, lines: list[str], out: list[list[str]]) -> list[str]:
        """Count blank lines before the header; pick the delimiter from the header line."""
        for index, line in enumerate(lines):
            if line.strip():
                self.delimiter = sniff_dialect_delimiter(line)
                return lines[index:]
            out.append([])
            self.records_done += 1
        return []

    def _parse(self, lines: list[str], out: list[list[str]]) -> None:
        if not lines:
            return
        assert self.delimiter is not None
        reader = csv.reader(lines, delimiter=self.delimiter)
        try:
            for record in reader:
                out.append(record)
                self.records_done += 1
        except csv.Error:
            # Only csv's own field size limit can get here; never quote the content.
            raise CsvFormatError(
                "a field is longer than the size limit", self.records_done + 1
            ) from None


Row = tuple[int, dict[str, str]]


@dataclass(frozen=True)
class CsvHeader:
    """A file's header row: its number, the names as written (trimmed) and the key each
    gives its rows (the known column, through an alias or not; else the name itself)."""

    row_number: int
    names: tuple[str, ...]
    keys: tuple[str, ...]


class _RowBuilder:
    """Applies the header, the limits and the row numbering to parsed records."""

    def __init__(self, max_field_bytes: int, max_columns: int) -> None:
        self._max_field_bytes = max_field_bytes
        self._max_columns = max_columns
        self._row_number = 0
        self._keys: list[str] | None = None
        self.header: CsvHeader | None = None

    def add(self, cells: list[str], out: list[Row], *, unterminated: bool = False) -> None:
        self._row_number += 1
        if not cells or not any(cell.strip() for cell in cells):
            return
        self._check_field_sizes(cells)
        keys = self._keys
        if keys is None:
            if unterminated:
                raise CsvFormatError("the header row has a quoted field that is never closed", 1)
            self._keys = self._header(cells)
            return
        width = len(keys)
        row = dict(zip(keys, [cell.strip() for cell in cells], strict=False))
        if len(cells) < width:
            for key in keys[len(cells) :]:
                row[key] = ""
        elif len(cells) > width and any(cell.strip() for cell in cells[width:]):
            # Trailing empty cells (a spreadsheet's stray delimiters) carry nothing; others do.
            row[ROW_ERROR_KEY] = f"row has {len(cells)} cells but the header has {width}"
        if unterminated:
            row[ROW_ERROR_KEY] = "a quoted field is not closed before the end of the file"
        out.append((self._row_number, row))

    def finish(self) -> None:
        if self._keys is None:
            raise CsvFormatError(EMPTY_FILE, max(self._row_number, 1))

    def _check_field_sizes(self, cells: list[str]) -> None:
        limit = self._max_field_bytes
        # UTF-8 needs at most 4 bytes a character: only encode when the limit may be exceeded.
        if max(len(cell) for cell in cells) * 4 <= limit:
            return
        for cell in cells:
            if len(cell) > limit or len(cell.encode("utf-8")) > limit:
                raise CsvFormatError(f"a field is longer than {limit} bytes", self._row_number)

    def _header(self, cells: list[str]) -> list[str]:
        names = [cell.strip() for cell in cells]
        while names and not names[-1]:
            names.pop()  # trailing empty header cells come from stray delimiters
        row = self._row_number
        for column, name in enumerate(names, start=1):
            looks = data_like(name)
            if looks:  # said without quoting the cell: it is a contact's data
                raise CsvFormatError(
                    f"the first row is not a header: its column {column} holds what looks like "
                    f"{looks}; the file must start with a header row such as {EXPECTED_HEADER}",
                    row,
                )
        if len(names) > self._max_columns:
            raise CsvFormatError(
                f"the header has {len(names)} columns, more than the limit of {self._max_columns}",
                row,
            )
        keys: list[str] = []
        seen: dict[str, int] = {}
        for column, name in enumerate(names, start=1):
            if not name:
                raise CsvFormatError(f"header column {column} has no name", row)
            key = canonical_column(name) or name
            if key == ROW_ERROR_KEY:
                raise CsvFormatError(f"header column {column} uses a reserved name", row)
            if key in seen:
                earlier = seen[key]
                if key in KNOWN_COLUMNS:  # names of the vocabulary: safe to quote
                    raise CsvFormatError(
                        f"header columns {earlier} ('{names[earlier - 1]}') and {column} "
                        f"('{name}') are both the {key} column: keep one of them",
                        row,
                    )
                raise CsvFormatError(
                    f"header column {column} repeats the name of an earlier column", row
                )
            seen[key] = column
            keys.append(key)
        self.header = CsvHeader(row, tuple(names), tuple(keys))
        return keys


class _CsvParser:
    """Synchronous core of :func:`iter_csv_rows`: bytes in, numbered rows out."""

    def __init__(self, max_field_bytes: int, max_columns: int, delimiter: str | None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        # A record holds at most max_columns fields, each quoted and delimited.
        max_record_chars = max_columns * (max_field_bytes + 3) + 2
        self._splitter = _RecordSplitter(delimiter, max_record_chars)
        self._rows = _RowBuilder(max_field_bytes, max_columns)
        self._decoded_any = False

    @property
    def header(self) -> CsvHeader | None:
        """The header row, once it has been read."""
        return self._rows.header

    def feed(self, chunk: bytes, *, final: bool = False) -> tuple[list[Row], CsvFormatError | None]:
        """Rows completed by ``chunk``, then the error that stopped reading, if any.

        Rows before an error are returned so the outcome does not depend on chunk sizes.
        """
        records: list[list[str]] = []
        split_error: CsvFormatError | None = None
        try:
            self._split(chunk, records, final=final)
        except CsvFormatError as exc:
            split_error = exc
        rows: list[Row] = []
        try:
            last = len(records) - 1
            unterminated = self._splitter.unterminated
            for index, record in enumerate(records):
                self._rows.add(record, rows, unterminated=unterminated and index == last)
            if split_error is not None:
                raise split_error
            if final:
                self._rows.finish()
        except CsvFormatError as exc:
            return rows, exc
        return rows, None

    def _split(self, chunk: bytes, records: list[list[str]], *, final: bool) -> None:
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            # Read what came before the bad bytes so the row number is exact.
            valid = bytes(exc.object[: exc.start]).decode("utf-8", "replace")
            if not self._decoded_any and valid.startswith("\ufeff"):
                valid = valid[1:]
            self._splitter.feed(valid, records)
            raise CsvFormatError(
                "the file is not valid UTF-8", self._splitter.records_done + 1
            ) from None
        if text:
            self._decoded_any = True
        self._splitter.feed(text, records, final=final)


async def iter_csv_rows(
    chunks: AsyncIterator[bytes],
    *,
    max_field_bytes: int = 65536,
    max_columns: int = 200,
    delimiter: str | None = None,
) -> AsyncIterator[tuple[int, dict[str, str]]]:
    """Yield ``(row_number, row)`` for every non-blank data row of a streamed CSV file.

    ``row`` maps the header's keys (see :class:`CsvHeader`: the known columns by their own
    name, aliases included; other names as written, trimmed) to stripped values; cells
    missing at the end of a row are ``""``. A row that cannot be used carries
    :data:`ROW_ERROR_KEY` with a reason instead of failing the file. ``delimiter`` defaults
    to :func:`sniff_dialect_delimiter` on the header line. Raises :class:`CsvFormatError`
    when the file as a whole is unreadable, after yielding the rows before the problem.
    """
    _, rows = await open_csv_rows(
        chunks, max_field_bytes=max_field_bytes, max_columns=max_columns, delimiter=delimiter
    )
    async for item in rows:
        yield item


async def open_csv_rows(
    chunks: AsyncIterator[bytes],
    *,
    max_field_bytes: int = 65536,
    max_columns: int = 200,
    delimiter: str | None = None,
) -> tuple[CsvHeader, AsyncIterator[Row]]:
    """Read a streamed CSV file up to the end of its header row; the header, and the rows
    (as :func:`iter_csv_rows` yields them, read on from where the header ended).

    A file without a usable header raises :class:`CsvFormatError` here, before any row:
    the caller can refuse it before storing anything. Problems after the header are raised
    by the rows, after the rows before them."""
    if max_field_bytes < 1 or max_columns < 1:
        raise ValueError("max_field_bytes and max_columns must be positive")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise ValueError("delimiter must be one character other than a quote or line break")
    parser = _CsvParser(max_field_bytes, max_columns, delimiter)
    pending: list[Row] = []
    error: CsvFormatError | None = None
    ended = False
    while parser.header is None and error is None:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            rows, error = parser.feed(b"", final=True)
            pending.extend(rows)
            ended = True
            break
        rows, error = parser.feed(chunk)
        pending.extend(rows)
    if parser.header is None:
        assert error is not None  # the final feed raises for a file without a header
        raise error
    return parser.header, _rows_after_header(parser, chunks, pending, error, ended)


async def _rows_after_header(
    parser: _CsvParser,
    chunks: AsyncIterator[bytes],
    pending: list[Row],
    error: CsvFormatError | None,
    ended: bool,
) -> AsyncIterator[Row]:
    for item in pending:
        yield item
    if error is not None:
        raise error
    if ended:
        return
    async for chunk in chunks:
        rows, error = parser.feed(chunk)
        for item in rows:
            yield item
        if error is not None:
            raise error
    rows, error = parser.feed(b"", final=True)
    for item in rows:
        yield item
    if error is not None:
        raise error
