"""The encryption ring: seal every stored token again under the current key."""

from __future__ import annotations

from typing import Any

import structlog

from dispatch_engine.db.rekeying import count_under_old_key, old_key_page, write_unchanged
from dispatch_engine.db.session import AsyncSession, async_sessionmaker
from dispatch_engine.security.crypto import DecryptionError, FieldCipher
from dispatch_engine.services.key_rotation.common import (
    ColumnResult,
    EncryptedColumn,
    in_batches,
)

log = structlog.get_logger(__name__)

# --- encryption ring ----------------------------------------------------------------------


async def reencrypt_column(
    sessions: async_sessionmaker[AsyncSession],
    spec: EncryptedColumn,
    cipher: FieldCipher,
    batch_size: int,
    dry_run: bool,
) -> ColumnResult:
    result = ColumnResult(spec.name, "encryption")
    table = spec.table
    current = cipher.current_key_id

    async def step(session: AsyncSession, after: Any) -> Any:
        rows = await old_key_page(
            session, table, spec.key, spec.column, current, after=after, limit=batch_size
        )
        if not rows:
            return None
        updates: list[dict[str, Any]] = []
        skipped = 0
        for row_key, token in rows:
            aad = spec.aad(row_key)
            try:
                plaintext = cipher.decrypt(token, aad=aad)
            except DecryptionError:
                skipped += 1
                log.warning("key_rotation_undecryptable", column=spec.name, row=row_key)
                continue
            updates.append(
                {
                    "k": row_key,
                    f"new_{spec.column}": cipher.encrypt(plaintext, aad=aad),
                    f"old_{spec.column}": token,
                }
            )
        result.changed += await write_unchanged(
            session, table, spec.key, updates, new=[spec.column], old=[spec.column], dry_run=dry_run
        )
        result.skipped += skipped
        return rows[-1][0]

    await in_batches(sessions, step)
    async with sessions() as session:
        result.remaining = await count_under_old_key(session, table, spec.column, current)
    return result
