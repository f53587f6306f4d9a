"""Writes audit records inside the caller's transaction (no commit here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import AuditRecord, new_id


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
