"""`GET /v1/admin/audit`: who changed what, when, before and after."""

from __future__ import annotations

from fastapi import APIRouter, Query

from dispatch_engine.api.deps import OperatorActor, SessionDep
from dispatch_engine.api.openapi import doc, problems
from dispatch_engine.api.paging import PagerDep
from dispatch_engine.schemas.audit import AuditOut, AuditPage
from dispatch_engine.schemas.common import UtcTime
from dispatch_engine.store.audit import AuditFilter, audit_page

router = APIRouter(prefix="/v1/admin/audit", tags=["audit"])


@router.get(
    "",
    response_model=AuditPage,
    summary="Read the audit log",
    description=doc(
        """
        Every change and operator action, newest first: when, which key and role, the
        action (`policy.update`, `pause.create`, `incident.resend`, …), its target, the
        account and incident it concerns, and the state before and after. Filters combine:
        `account`, `action` (exact, or a prefix ending in `.` such as `pause.`),
        `target_type`, `target_id`, `key_id`, `incident`, and a time range `since` (from)
        to `until` (before). Paged: pass `next_cursor` back as `cursor`. `operator` and
        `admin` keys.
        """
    ),
    responses=problems(401, 403, 422),
)
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
    *,
    pager: PagerDep,
) -> AuditPage:
    """Newest first."""
    where = AuditFilter(account, action, target_type, target_id, key_id, incident, since, until)
    page = pager.page
    async with session.begin():
        rows, next_cursor = await audit_page(session, where, limit=page.limit, cursor=page.cursor)
    pager.next_page(next_cursor)
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
    return AuditPage(items=items, next_cursor=next_cursor)
