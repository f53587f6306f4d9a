"""The columns of a contact file: the ones the service knows, their aliases, and what a file
needs before any of its rows is read.

A column name is matched trimmed, case-insensitively, with spaces and hyphens read as
underscores (`E-Mail`, ` External ID ` and `mobile_phone` all match). Any other column is
an attribute, passed to the vendor as written. Reasons never quote a cell that may be
personal data: a column name is quoted only once it matched the fixed vocabulary below, or
once the row it is in was taken as a header.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "ALIASES",
    "CHANNEL_COLUMNS",
    "COLUMN_ORDER",
    "EXPECTED_HEADER",
    "KNOWN_COLUMNS",
    "canonical_column",
    "data_like",
    "is_alias",
    "missing_channel_column",
    "names_of",
]

#: Columns with a meaning to the engine, in the order a header is suggested in.
COLUMN_ORDER: tuple[str, ...] = ("external_id", "email", "mobile", "time_zone")
KNOWN_COLUMNS: frozenset[str] = frozenset(COLUMN_ORDER)

#: Other names accepted for the known columns (matched as the columns are). Kept short on
#: purpose: each alias takes a name away from the attributes. Documented in README.md.
ALIASES: dict[str, str] = {
    "e_mail": "email",
    "email_address": "email",
    "phone": "mobile",
    "phone_number": "mobile",
    "mobile_number": "mobile",
    "mobile_phone": "mobile",
    "id": "external_id",
    "timezone": "time_zone",
}

#: The header row suggested when a file has none.
EXPECTED_HEADER = ",".join(COLUMN_ORDER)

#: The column that carries each lineup channel's address.
CHANNEL_COLUMNS: dict[str, str] = {"email": "email", "sms": "mobile"}

_SEPARATORS = re.compile(r"[\s_-]+")
_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+")
_PHONE_LIKE = re.compile(r"\+?[\d\s().\-/]+")
_PHONE_DIGITS = 6


def _fold(name: str) -> str:
    return _SEPARATORS.sub("_", name.strip().lower())


def canonical_column(name: str) -> str | None:
    """The known column `name` stands for (itself or through an alias), or None."""
    folded = _fold(name)
    if folded in KNOWN_COLUMNS:
        return folded
    return ALIASES.get(folded)


def is_alias(name: str) -> bool:
    """Whether `name` names a known column through an alias (not by its own name)."""
    return _fold(name) in ALIASES


def data_like(cell: str) -> str | None:
    """What a cell looks like when it is a contact's data rather than a column name
    ("an email address", "a phone number"), or None."""
    text = cell.strip()
    if _EMAIL_LIKE.fullmatch(text):
        return "an email address"
    if _PHONE_LIKE.fullmatch(text) and sum(c.isdigit() for c in text) >= _PHONE_DIGITS:
        return "a phone number"
    return None


def names_of(column: str) -> str:
    """`mobile (or phone, phone_number, …)`: a known column with its aliases, for messages."""
    aliases = [alias for alias, target in ALIASES.items() if target == column]
    return f"{column} (or {', '.join(aliases)})" if aliases else column


def missing_channel_column(recognised: Iterable[str], channels: Iterable[str]) -> str | None:
    """Why a file with these recognised columns cannot reach any channel of the lineup
    (`channels`: email, sms), or None when one of its address columns is there."""
    present = set(recognised)
    wanted = [CHANNEL_COLUMNS[channel] for channel in sorted(channels)]
    if any(column in present for column in wanted):
        return None
    needed = " or ".join(f"a column {names_of(column)}" for column in wanted)
    lineup = " and ".join(f"{channel} messages" for channel in sorted(channels))
    return f"no column holds an address for the lineup's {lineup}: the file needs {needed}"
