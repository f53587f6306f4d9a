"""Status notices: an incident's notices in order, and the public feed's live ones."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import Incident, IncidentStatusUpdate
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

NOTICE_ORDER = (Key(IncidentStatusUpdate.posted_at), Key(IncidentStatusUpdate.id))


async def notices_of_incident(session: AsyncSession, incident_id: str, page: PageRequest) -> Page:
    """A page of the incident's notices, oldest first."""
    query = select(IncidentStatusUpdate).where(IncidentStatusUpdate.incident_id == incident_id)
    return await page_of(session, query, NOTICE_ORDER, page)


async def live_notices(session: AsyncSession, now: datetime) -> list[IncidentStatusUpdate]:
    """Each incident's newest notice while it is live (not expired; a closed incident's only
    if Resolved), newest first."""
    ranked = select(
        IncidentStatusUpdate.id.label("id"),
        func.row_number()
        .over(
            partition_by=IncidentStatusUpdate.incident_id,
            order_by=(IncidentStatusUpdate.posted_at.desc(), IncidentStatusUpdate.id.desc()),
        )
        .label("rank"),
    ).subquery()
    query = (
        select(IncidentStatusUpdate)
        .join(ranked, ranked.c.id == IncidentStatusUpdate.id)
        .join(Incident, Incident.id == IncidentStatusUpdate.incident_id)
        .where(
            ranked.c.rank == 1,
            or_(IncidentStatusUpdate.expires_at.is_(None), IncidentStatusUpdate.expires_at > now),
            or_(Incident.state != "closed", IncidentStatusUpdate.template == "resolved"),
        )
        .order_by(IncidentStatusUpdate.posted_at.desc(), IncidentStatusUpdate.id.desc())
    )
    return list((await session.execute(query)).scalars())
