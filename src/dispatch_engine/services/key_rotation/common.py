"""Shared pieces of key rotation: results, batching and the key-id checks. The
encrypted-column registry and the queries are in store/key_rotation.py; the table-agnostic
old-key pages and conditional rewrites in db/rekeying.py."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from dispatch_engine.db.session import AsyncSession, IntegrityError, async_sessionmaker
from dispatch_engine.security.hashing import KeyedHasher
from dispatch_engine.store.key_rotation import ENCRYPTED_COLUMNS, EncryptedColumn

__all__ = [
    "ENCRYPTED_COLUMNS",
    "ColumnResult",
    "EncryptedColumn",
    "RotationReport",
    "in_batches",
    "is_current",
    "matches",
]

log = structlog.get_logger(__name__)

BATCH_RETRIES = 3


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


# --- shared helpers ----------------------------------------------------------------------


def is_current(value: str | None, current_key_id: str) -> bool:
    return value is None or value.startswith(f"{current_key_id}:")


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
