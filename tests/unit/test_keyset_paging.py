"""Keyset paging (store/paging.py): one stable order, no skipped or repeated rows while
others are inserted between pages, and a tampered cursor is a 422 on `cursor`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Boolean, String, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatch_engine.db.engine import session_factory
from dispatch_engine.db.types import UTCDateTime
from dispatch_engine.errors import ValidationFailed
from dispatch_engine.schemas.cursor import encode_keys
from dispatch_engine.store.paging import Key, keyset_page

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    pinned: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


ORDER = (Key(Thing.pinned, descending=True), Key(Thing.created_at), Key(Thing.id))


@pytest.fixture
async def sessions(tmp_path):  # type: ignore[no-untyped-def]
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield session_factory(engine)
    await engine.dispose()


async def _add(sessions, things) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session, session.begin():
        session.add_all(things)


async def _all_pages(sessions, limit: int, between=None) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    cursor = None
    while True:
        async with sessions() as session, session.begin():
            rows, cursor = await keyset_page(
                session, select(Thing), ORDER, limit=limit, cursor=cursor
            )
        assert len(rows) <= limit
        seen += [r.id for r in rows]
        if cursor is None:
            return seen
        if between:
            await between()


async def test_pages_follow_the_order_without_gaps_or_repeats(sessions) -> None:  # type: ignore[no-untyped-def]
    # same timestamps on purpose: the id breaks ties
    things = [
        Thing(id=f"t{i:02d}", pinned=i % 5 == 0, created_at=T0 + timedelta(minutes=i // 3))
        for i in range(23)
    ]
    await _add(sessions, things)
    expected = [t.id for t in sorted(things, key=lambda t: (not t.pinned, t.created_at, t.id))]
    for limit in (1, 2, 7, 23, 100):
        assert await _all_pages(sessions, limit) == expected


async def test_rows_inserted_before_the_cursor_do_not_shift_later_pages(sessions) -> None:  # type: ignore[no-untyped-def]
    await _add(
        sessions,
        [Thing(id=f"b{i}", pinned=False, created_at=T0 + timedelta(hours=i)) for i in range(10)],
    )
    inserted = iter(range(100))

    async def insert_early_row() -> None:
        await _add(
            sessions,
            [Thing(id=f"a{next(inserted)}", pinned=False, created_at=T0 - timedelta(days=1))],
        )

    seen = await _all_pages(sessions, 3, between=insert_early_row)
    assert seen == [f"b{i}" for i in range(10)]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64-json!",
        encode_keys("1", "2026-01-01T00:00:00+00:00"),  # too few keys
        encode_keys("yes", "2026-01-01T00:00:00+00:00", "x"),  # not a flag
        encode_keys("1", "2026-01-01T00:00:00", "x"),  # naive time
        encode_keys("1", "2026-01-01T00:00:00+00:00", "x\x00"),  # NUL
    ],
)
async def test_a_cursor_that_is_not_ours_is_refused_on_the_cursor_field(sessions, cursor) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session, session.begin():
        with pytest.raises(ValidationFailed) as refused:
            await keyset_page(session, select(Thing), ORDER, limit=5, cursor=cursor)
    assert [e.field for e in refused.value.errors] == ["cursor"]
