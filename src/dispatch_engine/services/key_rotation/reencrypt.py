"""The encryption ring: seal every stored token again under the current key."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch_engine.security.crypto import DecryptionError, FieldCipher
from dispatch_engine.services.key_rotation.common import (
    ColumnResult,
    EncryptedColumn,
    in_batches,
    under_old_key,
    write_unchanged,
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
    key, column = table.c[spec.key], table.c[spec.column]
    current = cipher.current_key_id

    async def step(session: AsyncSession, after: Any) -> Any:
        query = select(key, column).where(column.is_not(None), under_old_key(column, current))
        if after is not None:
            query = query.where(key > after)
        rows = (await session.execute(query.order_by(key).limit(batch_size))).all()
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
        query = select(func.count()).where(column.is_not(None), under_old_key(column, current))
        result.remaining = int((await session.execute(query)).scalar_one())
    return result
