"""Keyset paging for every list: a page is the rows after the last one the client saw, in
one stable order, so pages neither skip nor repeat rows when others are inserted meanwhile.

A list names its order as `Key`s (the last one unique, usually the id); the cursor holds
the last row's values of those keys in the one opaque format (`schemas/cursor.py`). A
cursor made for another list, or edited, answers 422 naming `cursor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from dispatch_engine.errors import ValidationFailed
from dispatch_engine.schemas.cursor import decode_keys, encode_keys, parse_time

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class PageRequest:
    """Which page of a list: at most `limit` items after `cursor` (None: the first page)."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


Page = tuple[list[Any], str | None]
"""A page's rows, and the cursor of the next page (None on the last one)."""


@dataclass(frozen=True)
class Key:
    """One column of a list's order."""

    column: InstrumentedAttribute[Any]
    descending: bool = False


def _python_type(column: InstrumentedAttribute[Any]) -> type:
    kind = column.type
    impl = getattr(kind, "impl", None)  # a TypeDecorator (UTC timestamps) says `object`
    return (impl if impl is not None else kind).python_type  # type: ignore[no-any-return]


def _to_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _from_text(column: InstrumentedAttribute[Any], text: str) -> Any:
    kind = _python_type(column)
    if kind is datetime:
        return parse_time(text)
    if kind is bool:
        if text not in ("0", "1"):
            raise ValidationFailed("cursor", "not a cursor from a previous page")
        return text == "1"
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValidationFailed("cursor", "not a cursor from a previous page") from None
    return text


def _beyond(key: Key, value: Any) -> ColumnElement[bool]:
    """Rows past `value` in this key's direction."""
    if isinstance(value, bool):  # false < true, said with IS: SQL `<` on flags is not portable
        # descending after true, or ascending after false: the other flag; else nothing
        return key.column.is_(not value) if value == key.descending else false()
    beyond: ColumnElement[bool] = key.column < value if key.descending else key.column > value
    return beyond


def _after(keys: Sequence[Key], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `keys` (each key ascending or not)."""
    clauses: list[ColumnElement[bool]] = []
    for i, key in enumerate(keys):
        equal_before = [k.column == v for k, v in zip(keys[:i], values[:i], strict=True)]
        beyond = _beyond(key, values[i])
        clauses.append(and_(*equal_before, beyond))
    return or_(false(), *clauses)


def cursor_of(keys: Sequence[Key], row: Any) -> str:
    """The cursor that continues after `row` (an ORM object with the keys' attributes)."""
    return encode_keys(*(_to_text(getattr(row, k.column.key)) for k in keys))


async def keyset_page(
    session: AsyncSession,
    query: Select[Any],
    keys: Sequence[Key],
    *,
    limit: int,
    cursor: str | None,
) -> Page:
    """Up to `limit` rows of `query` (one ORM entity) in the order of `keys`, after
    `cursor`; and the next page's cursor, None on the last page."""
    if cursor:
        texts = decode_keys(cursor, len(keys))
        query = query.where(
            _after(keys, [_from_text(k.column, t) for k, t in zip(keys, texts, strict=True)])
        )
    order = [k.column.desc() if k.descending else k.column.asc() for k in keys]
    rows = list((await session.execute(query.order_by(*order).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, cursor_of(keys, rows[-1]) if more and rows else None


async def page_of(
    session: AsyncSession, query: Select[Any], keys: Sequence[Key], page: PageRequest
) -> Page:
    """`keyset_page` for a `PageRequest`."""
    return await keyset_page(session, query, keys, limit=page.limit, cursor=page.cursor)
