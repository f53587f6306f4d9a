"""Audit records: written inside the caller's transaction (no commit here), and read
newest first, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import AuditRecord, new_id
from dispatch_engine.schemas.cursor import decode_cursor, encode_cursor


def record_audit(
    session: AsyncSession,
    *,
    at: datetime,
    key_id: str | None,
    role: str | None,
    action: str,
    target_type: str,
    target_id: str,
    account_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    incident: str | None = None,
) -> AuditRecord:
    entry = AuditRecord(
        id=new_id("aud"),
        at=at,
        key_id=key_id,
        role=role,
        action=action,
        target_type=target_type,
        target_id=target_id,
        account_id=account_id,
        before=before,
        after=after,
        incident=incident,
    )
    session.add(entry)
    return entry


@dataclass(frozen=True)
class AuditFilter:
    """What `GET /v1/admin/audit` narrows by; None means any. `action` ending in '.' is a
    prefix (`policy.` → every policy action)."""

    account: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    key_id: str | None = None
    incident: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def audit_page(
    session: AsyncSession, where: AuditFilter, *, limit: int, cursor: str | None
) -> tuple[list[AuditRecord], str | None]:
    """Up to `limit` records, newest first, after `cursor`; and the next page's cursor."""
    query = select(AuditRecord)
    equal = {
        AuditRecord.account_id: where.account,
        AuditRecord.target_type: where.target_type,
        AuditRecord.target_id: where.target_id,
        AuditRecord.key_id: where.key_id,
        AuditRecord.incident: where.incident,
    }
    for column, value in equal.items():
        if value:
            query = query.where(column == value)
    if where.action:
        query = query.where(
            AuditRecord.action.startswith(where.action, autoescape=True)
            if where.action.endswith(".")
            else AuditRecord.action == where.action
        )
    if where.since:
        query = query.where(AuditRecord.at >= where.since)
    if where.until:
        query = query.where(AuditRecord.at < where.until)
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            (AuditRecord.at < at) | ((AuditRecord.at == at) & (AuditRecord.id < last_id))
        )
    query = query.order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].at, rows[-1].id) if more and rows else None
