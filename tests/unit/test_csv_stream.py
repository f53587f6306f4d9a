"""Streaming CSV reader: chunk boundaries anywhere, header rules, limits, row numbers."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import random
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch_engine.ingest.csv_stream import (
    KNOWN_COLUMNS,
    ROW_ERROR_KEY,
    CsvFormatError,
    _RecordSplitter,
    iter_csv_rows,
    sniff_dialect_delimiter,
)

Rows = list[tuple[int, dict[str, str]]]


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _pieces(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _collect(chunks: AsyncIterator[bytes], **kwargs: Any) -> Rows:
    return [item async for item in iter_csv_rows(chunks, **kwargs)]


def read(data: bytes, size: int | None = None, **kwargs: Any) -> Rows:
    return asyncio.run(_collect(_chunks(data, size or max(len(data), 1)), **kwargs))


def read_error(data: bytes, size: int | None = None, **kwargs: Any) -> tuple[Rows, CsvFormatError]:
    """Rows yielded before the error, and the error."""
    rows: Rows = []

    async def run() -> None:
        async for item in iter_csv_rows(_chunks(data, size or max(len(data), 1)), **kwargs):
            rows.append(item)

    with pytest.raises(CsvFormatError) as info:
        asyncio.run(run())
    return rows, info.value


def reference_rows(text: str, delimiter: str = ",") -> Rows:
    """What the reader must produce, computed from csv.reader over the whole text."""
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    keys: list[str] | None = None
    rows: Rows = []
    for number, cells in enumerate(records, start=1):
        if not any(cell.strip() for cell in cells):
            continue
        if keys is None:
            names = [cell.strip() for cell in cells]
            while names and not names[-1]:
                names.pop()
            keys = [n.lower() if n.lower() in KNOWN_COLUMNS else n for n in names]
            continue
        row = {key: (cells[i].strip() if i < len(cells) else "") for i, key in enumerate(keys)}
        if any(cell.strip() for cell in cells[len(keys) :]):
            row[ROW_ERROR_KEY] = f"row has {len(cells)} cells but the header has {len(keys)}"
        rows.append((number, row))
    return rows


SAMPLE = (
    "\ufeffEmail,Mobile, First Name ,Member_ID,TIME_ZONE\r\n"
    '"a@example.com",+447700900123,"Zoë, ""the"" tester",m-1,Europe/London\r\n'
    "\r\n"
    'b@example.com,,"line one\r\nline two\nline three",漢字-2,\r\n'
    ",,,,\r\n"
    "c@example.com,,😀 emoji,m-3,Asia/Tokyo\r\n"
    "   \r\n"
    'd@example.com,,"ends, quoted",m-4,\r\n'
)


class TestChunking:
    @pytest.mark.parametrize("size", [1, 2, 3, 7, 64, None])
    def test_same_rows_for_every_chunk_size(self, size: int | None) -> None:
        data = SAMPLE.encode()
        assert read(data, size) == reference_rows(SAMPLE.removeprefix("\ufeff"))

    def test_sample_values(self) -> None:
        rows = read(SAMPLE.encode(), 3)
        assert [number for number, _ in rows] == [2, 4, 6, 8]
        first = rows[0][1]
        assert first == {
            "email": "a@example.com",
            "mobile": "+447700900123",
            "First Name": 'Zoë, "the" tester',
            "Member_ID": "m-1",
            "time_zone": "Europe/London",
        }
        assert rows[1][1]["First Name"] == "line one\r\nline two\nline three"
        assert rows[1][1]["time_zone"] == ""
        assert rows[2][1]["First Name"] == "😀 emoji"

    def test_bom_split_across_chunks(self) -> None:
        data = "\ufeffemail\nx@example.com\n".encode()
        for size in (1, 2, 3):
            assert read(data, size) == [(2, {"email": "x@example.com"})]

    def test_crlf_split_between_cr_and_lf(self) -> None:
        parts = [b"email,name\r", b"\na@example.com,A\r", b"\n", b"b@example.com,B\r"]
        rows = asyncio.run(_collect(_pieces(parts)))
        assert rows == [
            (2, {"email": "a@example.com", "name": "A"}),
            (3, {"email": "b@example.com", "name": "B"}),
        ]

    def test_bare_cr_line_endings(self) -> None:
        data = b"email,name\ra@example.com,A\rb@example.com,B"
        for size in (1, 2, 5, None):
            assert [n for n, _ in read(data, size)] == [2, 3]

    def test_quoted_field_spanning_chunks(self) -> None:
        parts = [b'email,note\na@example.com,"first', b"\nsecond,", b'still""', b' quoted"\n']
        rows = asyncio.run(_collect(_pieces(parts)))
        assert rows == [(2, {"email": "a@example.com", "note": 'first\nsecond,still" quoted'})]

    @pytest.mark.parametrize("text", ["é", "漢字", "😀", "e\u0301"])
    def test_multibyte_characters_split_everywhere(self, text: str) -> None:
        data = f"email,name\na@example.com,{text}{text}\n".encode()
        for size in range(1, 8):
            assert read(data, size) == [(2, {"email": "a@example.com", "name": text * 2})]

    def test_no_final_newline(self) -> None:
        assert read(b"email\na@example.com", 4) == [(2, {"email": "a@example.com"})]


_CELL = st.lists(st.sampled_from([*'ab ,;"\r\n\té漢😀', "\r\n"]), max_size=8).map("".join)


@st.composite
def generated_csv(draw: st.DrawFn) -> str:
    width = draw(st.integers(min_value=1, max_value=4))
    header = [f"col{i}" for i in range(width)]
    if draw(st.booleans()):
        header[0] = "Email"
    rows = draw(st.lists(st.lists(_CELL, min_size=0, max_size=width + 1), min_size=0, max_size=6))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    return text


class TestAgainstCsvModule:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(text=generated_csv(), data=st.data())
    def test_random_split_points_match_csv_reader(self, text: str, data: st.DataObject) -> None:
        encoded = text.encode()
        cuts = sorted(
            data.draw(
                st.lists(st.integers(min_value=0, max_value=len(encoded)), max_size=12),
                label="cuts",
            )
        )
        bounds = [0, *cuts, len(encoded)]
        parts = [encoded[a:b] for a, b in itertools.pairwise(bounds)]
        rows = asyncio.run(_collect(_pieces(parts)))
        assert rows == reference_rows(text)
        for size in (1, 2, 3, 7):
            assert read(encoded, size) == rows

    @settings(max_examples=500, deadline=None)
    @given(
        text=st.text(alphabet=st.sampled_from(list('a,"\r\n ')), max_size=30),
        data=st.data(),
    )
    def test_record_splitter_matches_csv_on_any_text(self, text: str, data: st.DataObject) -> None:
        """Even malformed quoting splits into the records csv.reader finds in the whole text."""
        cuts = sorted(
            data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=10))
        )
        bounds = [0, *cuts, len(text)]
        splitter = _RecordSplitter(",", 10**9)
        records: list[list[str]] = []
        for a, b in itertools.pairwise(bounds):
            splitter.feed(text[a:b], records)
        splitter.feed("", records, final=True)
        assert records == list(csv.reader(io.StringIO(text, newline="")))


class TestHeader:
    def test_known_columns_lower_cased_others_kept(self) -> None:
        rows = read(b" EMAIL , Mobile,External_ID,Time_Zone, Plan Name \nx@example.com,,,,Gold\n")
        assert list(rows[0][1]) == ["email", "mobile", "external_id", "time_zone", "Plan Name"]

    @pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b",,,\n"])
    def test_missing_header(self, data: bytes) -> None:
        rows, error = read_error(data)
        assert rows == []
        assert error.reason == (
            "the file is empty: expected a header row such as external_id,email,mobile,time_zone"
        )

    def test_leading_blank_lines_count_as_rows(self) -> None:
        assert read(b"\n\nemail\na@example.com\n", 1) == [(4, {"email": "a@example.com"})]

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (
                b"email,email\n",
                "header columns 1 ('email') and 2 ('email') are both the email column: "
                "keep one of them",
            ),
            (
                b"Email,EMAIL\n",
                "header columns 1 ('Email') and 2 ('EMAIL') are both the email column: "
                "keep one of them",
            ),
            (b"email, plan ,plan\n", "header column 3 repeats the name of an earlier column"),
            (b"email,,plan\n", "header column 2 has no name"),
            (b"email,__error__\n", "header column 2 uses a reserved name"),
        ],
    )
    def test_bad_header(self, data: bytes, reason: str) -> None:
        _, error = read_error(data)
        assert (error.reason, error.row_number) == (reason, 1)

    def test_distinct_case_of_free_columns_is_allowed(self) -> None:
        assert read(b"email,Plan,plan\nx@example.com,a,b\n")[0][1] == {
            "email": "x@example.com",
            "Plan": "a",
            "plan": "b",
        }

    def test_trailing_empty_header_cells_are_dropped(self) -> None:
        assert read(b"email,plan,,\nx@example.com,gold,,\n") == [
            (2, {"email": "x@example.com", "plan": "gold"})
        ]

    def test_too_many_columns(self) -> None:
        header = ",".join(f"c{i}" for i in range(5)).encode()
        _, error = read_error(header + b"\n", max_columns=4)
        assert error.row_number == 1
        assert "more than the limit of 4" in error.reason
        assert read(header + b"\n1,2,3,4,5\n", max_columns=5)[0][0] == 2

    def test_unclosed_quote_in_header(self) -> None:
        _, error = read_error(b'email,"plan\n')
        assert error.row_number == 1


class TestDelimiters:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("email,mobile", ","),
            ("email;mobile", ";"),
            ("email\tmobile", "\t"),
            ("email", ","),
            ("email;a,b", ","),
            ("a;b\tc\td", "\t"),
        ],
    )
    def test_sniff(self, line: str, expected: str) -> None:
        assert sniff_dialect_delimiter(line) == expected

    @pytest.mark.parametrize("delimiter", [";", "\t"])
    def test_semicolon_and_tab_files(self, delimiter: str) -> None:
        text = f'email{delimiter}name\na@example.com{delimiter}"x{delimiter} y"\n'
        for size in (1, 3, None):
            assert read(text.encode(), size) == [
                (2, {"email": "a@example.com", "name": f"x{delimiter} y"})
            ]

    def test_explicit_delimiter(self) -> None:
        async def run() -> Rows:
            chunks = _chunks(b"email|name\na@example.com|A\n", 2)
            return [item async for item in iter_csv_rows(chunks, delimiter="|")]

        assert asyncio.run(run()) == [(2, {"email": "a@example.com", "name": "A"})]


class TestRows:
    def test_ragged_rows(self) -> None:
        data = b"email,a,b\nx@example.com\ny@example.com,1,2,3\nz@example.com,1,2,,\n"
        rows = read(data, 5)
        assert rows[0] == (2, {"email": "x@example.com", "a": "", "b": ""})
        assert rows[1] == (
            3,
            {
                "email": "y@example.com",
                "a": "1",
                "b": "2",
                ROW_ERROR_KEY: "row has 4 cells but the header has 3",
            },
        )
        assert rows[2] == (4, {"email": "z@example.com", "a": "1", "b": "2"})

    def test_empty_lines_skipped_but_counted(self) -> None:
        data = b"email\n\na@example.com\n , \n\r\nb@example.com\n\n"
        assert read(data, 2) == [(3, {"email": "a@example.com"}), (6, {"email": "b@example.com"})]

    def test_values_stripped(self) -> None:
        assert read(b"email,name\n  a@example.com  ,\t A \t\n")[0][1] == {
            "email": "a@example.com",
            "name": "A",
        }

    def test_unclosed_quote_at_end_rejects_only_that_row(self) -> None:
        rows = read(b'email,name\na@example.com,A\nb@example.com,"B\nmore\n', 3)
        assert rows[0] == (2, {"email": "a@example.com", "name": "A"})
        number, row = rows[1]
        assert number == 3
        assert row[ROW_ERROR_KEY] == "a quoted field is not closed before the end of the file"


class TestErrors:
    @pytest.mark.parametrize("size", [1, 2, 3, 7, None])
    def test_invalid_utf8_reports_the_row(self, size: int | None) -> None:
        data = b"email,name\na@example.com,A\nb@example.com,B\xff\nc@example.com,C\n"
        rows, error = read_error(data, size)
        assert error.reason == "the file is not valid UTF-8"
        assert error.row_number == 3
        assert [number for number, _ in rows] == [2]

    def test_truncated_multibyte_at_end(self) -> None:
        _, error = read_error("email\nä".encode()[:-1], 1)
        assert error.reason == "the file is not valid UTF-8"

    @pytest.mark.parametrize("size", [1, 7, None])
    def test_field_over_the_byte_limit(self, size: int | None) -> None:
        data = ("email,name\na@example.com,ok\nb@example.com," + "é" * 7 + "\n").encode()
        rows, error = read_error(data, size, max_field_bytes=13)
        assert error.row_number == 3
        assert error.reason == "a field is longer than 13 bytes"
        assert "é" not in str(error)
        assert [number for number, _ in rows] == [2]
        assert len(read(data, size, max_field_bytes=14)) == 2

    def test_never_closed_quote_is_bounded(self) -> None:
        data = b'email,name\na@example.com,"' + b"x\n" * 5000
        _, error = read_error(data, 64, max_field_bytes=100, max_columns=2)
        assert error.row_number == 2
        assert "size limit" in error.reason

    def test_line_without_end_is_bounded(self) -> None:
        data = b"email,name\n" + b"x" * 100_000
        _, error = read_error(data, 1000, max_field_bytes=100, max_columns=2)
        assert error.row_number == 2

    def test_error_text_has_no_content(self) -> None:
        data = b"secret@example.com,secret@example.com\n"
        _, error = read_error(data)
        assert "secret" not in str(error)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            read(b"email\n", max_field_bytes=0)


def test_large_file_streams_quickly() -> None:
    rng = random.Random(7)
    lines = ["email,mobile,external_id,first_name,member_id"]
    for i in range(200_000):
        note = f'"Name, {i}"' if i % 10 == 0 else f"Name {i}"
        lines.append(f"user{i}@example.com,+4477009{rng.randrange(10**5):05d},ext-{i},{note},m{i}")
    data = ("\r\n".join(lines) + "\r\n").encode()

    async def count() -> tuple[int, int]:
        total = 0
        last = 0
        async for number, row in iter_csv_rows(_chunks(data, 64 * 1024)):
            total += 1
            last = number
            assert ROW_ERROR_KEY not in row
        return total, last

    started = time.perf_counter()
    assert asyncio.run(count()) == (200_000, 200_001)
    assert time.perf_counter() - started < 8
