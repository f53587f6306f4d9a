"""Unsubscribes keyed by address hash: recorded and lifted by the events API, and copied to a
person's new hash on a key rotation (no commit here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import chunks, member_of
from dispatch_engine.db.dialect import insert_ignoring_conflicts
from dispatch_engine.models import Unsubscribe
from dispatch_engine.models.base import table_of


async def blocked_among(
    session: AsyncSession, account_id: str, channel: str, hashes: Sequence[str]
) -> set[str]:
    """Which of these address hashes the account already blocks on the channel."""
    return set(
        (
            await session.execute(
                select(Unsubscribe.address_hash).where(
                    Unsubscribe.account_id == account_id,
                    Unsubscribe.channel == channel,
                    Unsubscribe.address_hash.in_(hashes),
                )
            )
        ).scalars()
    )


async def add_unsubscribes(
    session: AsyncSession,
    account_id: str,
    channel: str,
    hashes: Sequence[str],
    now: datetime,
    source: str,
) -> None:
    """Block these address hashes (none of them blocked yet) in one statement."""
    rows = [
        {
            "account_id": account_id,
            "channel": channel,
            "address_hash": h,
            "created_at": now,
            "source": source,
        }
        for h in hashes
    ]
    if rows:
        await session.execute(table_of(Unsubscribe).insert(), rows)


async def remove_unsubscribes(
    session: AsyncSession, account_id: str, channel: str, hashes: Sequence[str]
) -> int:
    """Lift the account's blocks of these address hashes on the channel; returns how many."""
    result = await session.execute(
        delete(Unsubscribe).where(
            Unsubscribe.account_id == account_id,
            Unsubscribe.channel == channel,
            Unsubscribe.address_hash.in_(hashes),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def copy_unsubscribes(
    session: AsyncSession, pairs: Mapping[str, str], *, dry_run: bool = False
) -> int:
    """For every unsubscribe stored under an old hash of ``pairs`` (old -> new), the same
    unsubscribe (account, channel, time, source) under the new hash, unless it exists.
    Old rows are kept. Returns the rows added (or, with ``dry_run``, missing)."""
    if not pairs:
        return 0
    found: list[Any] = []
    for chunk in chunks(list(pairs)):
        found.extend(
            (
                await session.execute(
                    select(
                        Unsubscribe.account_id,
                        Unsubscribe.channel,
                        Unsubscribe.address_hash,
                        Unsubscribe.created_at,
                        Unsubscribe.source,
                    ).where(member_of(session, Unsubscribe.address_hash, chunk))
                )
            ).all()
        )
    if not found:
        return 0
    wanted: dict[tuple[str, str, str], dict[str, Any]] = {}
    for account_id, channel, old_hash, created_at, source in found:
        new_hash = pairs[old_hash]
        wanted.setdefault(
            (account_id, channel, new_hash),
            {
                "account_id": account_id,
                "channel": channel,
                "address_hash": new_hash,
                "created_at": created_at,
                "source": source,
            },
        )
    present: set[tuple[str, str, str]] = set()
    new_hashes = sorted({key[2] for key in wanted})
    for chunk in chunks(new_hashes):
        rows = await session.execute(
            select(Unsubscribe.account_id, Unsubscribe.channel, Unsubscribe.address_hash).where(
                member_of(session, Unsubscribe.address_hash, chunk)
            )
        )
        present.update((a, c, h) for a, c, h in rows.all())
    missing = [row for key, row in wanted.items() if key not in present]
    if dry_run or not missing:
        return len(missing)
    table = table_of(Unsubscribe)
    inserted = 0
    for chunk in chunks(missing):
        statement = insert_ignoring_conflicts(session, table)
        result = await session.execute(
            statement.values(list(chunk)).returning(table.c.address_hash)
        )
        inserted += len(result.all())
    return inserted
