"""CSV that is safe to open in a spreadsheet: RFC 4180 lines (CRLF, quoted where needed)
whose cells never start like a formula (CSV injection), and times in UTC with a `Z`."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """A spreadsheet must not run a cell as a formula: prefix risky starts with a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_time(at: datetime | None) -> str:
    return "" if at is None else at.isoformat().replace("+00:00", "Z")


def csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([safe_cell(v) for v in values])
    return buffer.getvalue()
