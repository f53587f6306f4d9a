"""Shared pieces of key rotation: the encrypted-column registry, results, batching and
the key-id checks (the conditional updates themselves are in db/conditional.py)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch_engine.db.bulk import chunks, member_of
from dispatch_engine.db.conditional import update_unchanged
from dispatch_engine.models import (
    IncidentCommunication,
    Invite,
    NotificationWebhook,
    QueueIntegration,
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


async def count_matching(session: AsyncSession, column: Any, values: Sequence[str]) -> int:
    total = 0
    for chunk in chunks(values):
        query = select(func.count()).where(member_of(session, column, chunk))
        total += int((await session.execute(query)).scalar_one())
    return total


def matches(hasher: KeyedHasher, stored: str, value: str) -> bool:
    """``stored`` (``"<key id>:<hex>"``) is ``value``'s HMAC under that (known) key."""
    key_id, sep, digest = stored.partition(":")
    if not sep or key_id not in hasher.key_ids:
        return False
    return hmac.compare_digest(hasher.digest(value, key_id), digest)


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
