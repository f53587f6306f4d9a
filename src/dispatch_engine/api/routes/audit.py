"""`GET /v1/admin/audit`: who changed what, when, before and after."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from dispatch_engine.api.deps import OperatorActor, SessionDep
from dispatch_engine.errors import ValidationFailed
from dispatch_engine.models import AuditRecord
from dispatch_engine.schemas.common import UtcTime

router = APIRouter(prefix="/v1/admin/audit", tags=["admin"])


class AuditOut(BaseModel):
    id: str
    at: datetime
    key_id: str | None
    role: str | None
    action: str
    target_type: str
    target_id: str
    account: str | None
    incident: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


@router.get("", response_model=AuditPage)
async def list_audit(
    actor: OperatorActor,
    session: SessionDep,
    account: str | None = None,
    action: str | None = Query(default=None, description="Exact action, or a prefix ending in '.'"),
    target_type: str | None = None,
    target_id: str | None = None,
    key_id: str | None = None,
    incident: str | None = Query(default=None, description="Entries made under this incident"),
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
) -> AuditPage:
    """Newest first."""
    query = select(AuditRecord)
    if account:
        query = query.where(AuditRecord.account_id == account)
    if action:
        query = query.where(
            AuditRecord.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditRecord.action == action
        )
    if target_type:
        query = query.where(AuditRecord.target_type == target_type)
    if target_id:
        query = query.where(AuditRecord.target_id == target_id)
    if key_id:
        query = query.where(AuditRecord.key_id == key_id)
    if incident:
        query = query.where(AuditRecord.incident == incident)
    if since:
        query = query.where(AuditRecord.at >= since)
    if until:
        query = query.where(AuditRecord.at < until)
    if cursor:
        at_text, _, last_id = cursor.partition("|")
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise ValidationFailed("cursor", "not a cursor from a previous page") from None
        if at.tzinfo is None:
            raise ValidationFailed("cursor", "not a cursor from a previous page")
        query = query.where(
            (AuditRecord.at < at) | ((AuditRecord.at == at) & (AuditRecord.id < last_id))
        )
    query = query.order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(limit + 1)
    async with session.begin():
        rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        AuditOut(
            id=r.id,
            at=r.at,
            key_id=r.key_id,
            role=r.role,
            action=r.action,
            target_type=r.target_type,
            target_id=r.target_id,
            account=r.account_id,
            incident=r.incident,
            before=r.before,
            after=r.after,
        )
        for r in rows
    ]
    next_cursor = f"{rows[-1].at.isoformat()}|{rows[-1].id}" if more and rows else None
    return AuditPage(items=items, next_cursor=next_cursor)
