"""Shared pieces of key rotation: the encrypted-column registry, results, batching and
conditional-update SQL helpers."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch_engine.db.bulk import asyncpg_connection, dialect_of, member_of, pg_array_type
from dispatch_engine.models import (
    IncidentCommunication,
    Invite,
    NotificationWebhook,
    QueueIntegration,
    Unsubscribe,
)
from dispatch_engine.models.base import Base, table_of
from dispatch_engine.security.hashing import KeyedHasher
from dispatch_engine.security.sealing import (
    communication_recipient_aad,
    contact_aad,
    integration_secret_aad,
    webhook_url_aad,
)

log = structlog.get_logger(__name__)

BATCH_RETRIES = 3
# Values per `IN (…)` list or multi-row INSERT (SQLite allows 32,766 parameters).
_CHUNK = 1_000


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of FieldCipher tokens, its table's primary key, and the associated data the
    writer bound each token to (computed from the primary key)."""

    model: type[Base]
    key: str
    column: str
    aad: Callable[[str], bytes]

    @property
    def table(self) -> Table:
        return table_of(self.model)

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"


#: Every encrypted column, with the aad of its writer (tests check no call site is missed).
ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    # security.sealing.seal_contact (ingest), opened by delivery and events.
    EncryptedColumn(Invite, "id", "contact", contact_aad),
    # services.integrations.put_integration, opened by queues.factory.integration_secrets.
    EncryptedColumn(QueueIntegration, "account_id", "secret", integration_secret_aad),
    # incidents.notifications.create_webhook, opened by notifications._post.
    EncryptedColumn(NotificationWebhook, "id", "url", webhook_url_aad),
    # incidents.communications.record_communication, opened by communication_out.
    EncryptedColumn(IncidentCommunication, "id", "recipient", communication_recipient_aad),
)


@dataclass
class ColumnResult:
    """What one run did to one column.

    ``changed``: values moved to the current key (with ``dry_run``: that would be moved).
    ``skipped``: values that could not be moved (undecryptable token, unknown key id, a
    hash that no stored value reproduces); they stay as they are. ``remaining``: values still
    under another key after the run (``None``: not counted).
    """

    name: str
    ring: str
    changed: int = 0
    skipped: int = 0
    remaining: int | None = None


@dataclass
class RotationReport:
    dry_run: bool
    encryption_key_id: str
    hmac_key_id: str
    columns: list[ColumnResult] = field(default_factory=list)

    def column(self, name: str) -> ColumnResult:
        return next(c for c in self.columns if c.name == name)

    @property
    def changed(self) -> int:
        return sum(c.changed for c in self.columns)

    @property
    def skipped(self) -> int:
        return sum(c.skipped for c in self.columns)

    @property
    def encryption_remaining(self) -> int:
        """Encrypted values still under an old key: the old key must stay until this is 0."""
        return sum(c.remaining or 0 for c in self.columns if c.ring == "encryption")


# --- shared SQL helpers ------------------------------------------------------------------


def under_old_key(column: Any, current_key_id: str) -> ColumnElement[bool]:
    """The value's key id prefix is not the current one (substr: ids may hold LIKE's `_`)."""
    prefix = f"{current_key_id}:"
    return func.substr(column, 1, len(prefix)) != prefix


def is_current(value: str | None, current_key_id: str) -> bool:
    return value is None or value.startswith(f"{current_key_id}:")


def chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _pg_conditional_update(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    new: Sequence[str],
    old: Sequence[str],
) -> list[Any]:
    """`UPDATE … FROM unnest(arrays)` with the old-value checks; returns updated keys."""
    names = ["k", *(f"new_{c}" for c in new), *(f"old_{c}" for c in old)]
    columns = [key, *new, *old]
    arrays = ", ".join(
        f"${i}::{pg_array_type(table.c[c])}[]" for i, c in enumerate(columns, start=1)
    )
    assignments = ", ".join(f'"{c}" = v."new_{c}"' for c in new)
    conditions = " AND ".join(
        [f't."{key}" = v."k"', *(f't."{c}" IS NOT DISTINCT FROM v."old_{c}"' for c in old)]
    )
    aliases = ", ".join(f'"{n}"' for n in names)
    # Identifiers come from the table's own metadata; values travel as parameters.
    sql = (
        f'UPDATE "{table.name}" AS t SET {assignments} '  # noqa: S608
        f"FROM unnest({arrays}) AS v({aliases}) WHERE {conditions} "
        f'RETURNING v."k"'
    )
    driver = await asyncpg_connection(session)
    records = await driver.fetch(sql, *[[row[n] for row in rows] for n in names])
    return [record[0] for record in records]


async def write_unchanged(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    new: Sequence[str],
    old: Sequence[str],
    dry_run: bool,
) -> int:
    """:func:`update_unchanged`, or with ``dry_run`` nothing written: the rows changed (or
    that would be)."""
    if dry_run:
        return len(rows)
    return len(await update_unchanged(session, table, key, rows, new=new, old=old))


async def update_unchanged(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    new: Sequence[str],
    old: Sequence[str],
) -> set[Any]:
    """One UPDATE for many rows of a unique ``key``: ``SET c = row["new_c"]`` where the row's
    ``old`` columns still hold ``row["old_c"]`` (NULL-safe). Rows changed meanwhile by
    another writer are left alone. Returns the keys of the rows updated."""
    if not rows:
        return set()
    if dialect_of(session) == "postgresql":
        return set(await _pg_conditional_update(session, table, key, rows, new, old))
    statement = (
        table.update()
        .where(
            table.c[key] == bindparam("b_k"),
            *(table.c[c].is_not_distinct_from(bindparam(f"b_old_{c}")) for c in old),
        )
        .values({c: bindparam(f"b_new_{c}") for c in new})
    )
    params = [{f"b_{name}": value for name, value in row.items()} for row in rows]
    result = await session.execute(statement, params)
    keys = {row["k"] for row in rows}
    if int(result.rowcount or 0) == len(rows):  # type: ignore[attr-defined]
        return keys
    # Some lost to a concurrent writer: the ones holding our new values are ours.
    wanted = {row["k"]: tuple(row[f"new_{c}"] for c in new) for row in rows}
    current = await session.execute(
        select(table.c[key], *(table.c[c] for c in new)).where(table.c[key].in_(list(keys)))
    )
    return {k for k, *values in current.all() if tuple(values) == wanted[k]}


async def relabel(
    session: AsyncSession, table: Table, column: str, pairs: Mapping[str, str]
) -> int:
    """``UPDATE table SET column = new WHERE column = old`` for every pair, one statement;
    returns the number of rows changed."""
    if not pairs:
        return 0
    rows = [{"k": old, f"new_{column}": new} for old, new in pairs.items()]
    if dialect_of(session) == "postgresql":
        return len(await _pg_conditional_update(session, table, column, rows, [column], []))
    statement = (
        table.update()
        .where(table.c[column] == bindparam("b_old"))
        .values({column: bindparam("b_new")})
    )
    result = await session.execute(
        statement, [{"b_old": old, "b_new": new} for old, new in pairs.items()]
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def count_matching(session: AsyncSession, column: Any, values: Sequence[str]) -> int:
    total = 0
    for chunk in chunks(values):
        query = select(func.count()).where(member_of(session, column, chunk))
        total += int((await session.execute(query)).scalar_one())
    return total


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
        statement = (
            pg_insert(table) if dialect_of(session) == "postgresql" else sqlite_insert(table)
        )
        result = await session.execute(
            statement.values(list(chunk)).on_conflict_do_nothing().returning(table.c.address_hash)
        )
        inserted += len(result.all())
    return inserted


def matches(hasher: KeyedHasher, stored: str, value: str) -> bool:
    """``stored`` (``"<key id>:<hex>"``) is ``value``'s HMAC under that (known) key."""
    key_id, sep, digest = stored.partition(":")
    if not sep or key_id not in hasher.key_ids:
        return False
    return hmac.compare_digest(hasher.digest(value, key_id), digest)


def old_key_ids(hasher: KeyedHasher) -> list[str]:
    return [k for k in hasher.key_ids if k != hasher.current_key_id]


async def in_batches(
    sessions: async_sessionmaker[AsyncSession],
    step: Callable[[AsyncSession, Any], Any],
) -> None:
    """Run ``step(session, after)`` in its own transaction until it returns None; a batch
    that races a concurrent writer into a unique index is retried from the same place."""
    after: Any = None
    while True:
        for attempt in range(1, BATCH_RETRIES + 1):
            try:
                async with sessions() as session, session.begin():
                    last = await step(session, after)
                break
            except IntegrityError:
                log.info("key_rotation_batch_retry", attempt=attempt)
                if attempt == BATCH_RETRIES:
                    raise
        if last is None:
            return
        after = last
