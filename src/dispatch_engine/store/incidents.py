"""Incidents: lookups, the filtered newest-first list, impacted accounts, post-mortem
presence, overdue clocks and their once-only alerts (no commit here)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.dialect import insert_ignoring_conflicts
from dispatch_engine.errors import NotFound
from dispatch_engine.models import (
    Incident,
    IncidentAccount,
    IncidentClockAlert,
    IncidentCommunication,
    IncidentPostmortem,
)
from dispatch_engine.models.base import table_of
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

# Each clock's stored due time (NULL when stopped): what `?overdue` and the clock job read.
DUE_COLUMNS = {"ack": "ack_due_at", "update": "update_due_at", "postmortem": "postmortem_due_at"}


@dataclass(frozen=True)
class IncidentFilters:
    state: str | None = None
    severity: str | None = None
    account: str | None = None
    open: bool | None = None
    overdue: bool | None = None
    clock: str | None = None


async def get_incident(session: AsyncSession, incident_id: str, *, lock: bool = False) -> Incident:
    """The incident; `lock` takes its row lock (PostgreSQL) so changes serialise."""
    incident = await session.get(Incident, incident_id, with_for_update=lock or None)
    if incident is None:
        raise NotFound(f"incident '{incident_id}'")
    return incident


async def incident_exists(session: AsyncSession, incident_id: str) -> bool:
    return await session.get(Incident, incident_id) is not None


async def find_postmortem(session: AsyncSession, incident_id: str) -> IncidentPostmortem | None:
    return await session.get(IncidentPostmortem, incident_id)


async def impacted_accounts_of(session: AsyncSession, ids: list[str]) -> dict[str, list[str]]:
    """Incident id -> its impacted account ids, sorted (an empty list for any other id)."""
    found: dict[str, list[str]] = defaultdict(list)
    if ids:
        rows = await session.execute(
            select(IncidentAccount.incident_id, IncidentAccount.account_id)
            .where(IncidentAccount.incident_id.in_(ids))
            .order_by(IncidentAccount.account_id)
        )
        for incident_id, account_id in rows:
            found[incident_id].append(account_id)
    return found


async def postmortem_times(session: AsyncSession, ids: list[str]) -> dict[str, datetime]:
    """Incident id -> when its post-mortem was recorded, for those that have one."""
    if not ids:
        return {}
    rows = await session.execute(
        select(IncidentPostmortem.incident_id, IncidentPostmortem.recorded_at).where(
            IncidentPostmortem.incident_id.in_(ids)
        )
    )
    return {incident_id: at for incident_id, at in rows}


async def clear_impacted_accounts(session: AsyncSession, incident_id: str) -> None:
    """Forget the incident's impacted accounts (the caller adds the new set)."""
    await session.execute(delete(IncidentAccount).where(IncidentAccount.incident_id == incident_id))


def _filtered(query: Select[Any], filters: IncidentFilters, now: datetime) -> Select[Any]:
    if filters.state:
        query = query.where(Incident.state == filters.state)
    if filters.severity:
        query = query.where(Incident.severity == filters.severity)
    if filters.account:
        query = query.where(
            exists().where(
                IncidentAccount.incident_id == Incident.id,
                IncidentAccount.account_id == filters.account,
            )
        )
    if filters.open is not None:
        query = query.where(
            Incident.state != "closed" if filters.open else Incident.state == "closed"
        )
    columns = [getattr(Incident, DUE_COLUMNS[filters.clock])] if filters.clock else None
    columns = columns or [getattr(Incident, column) for column in DUE_COLUMNS.values()]
    if filters.overdue is True:
        query = query.where(or_(*(column < now for column in columns)))
    elif filters.overdue is False:
        query = query.where(*((column.is_(None) | (column >= now)) for column in columns))
    return query


async def filtered_incidents(
    session: AsyncSession,
    filters: IncidentFilters,
    now: datetime,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Incident]:
    """Up to `limit` incidents, newest reported first, after (reported_at, id) `after`."""
    query = _filtered(select(Incident), filters, now)
    if after:
        at, last_id = after
        query = query.where(
            (Incident.reported_at < at) | ((Incident.reported_at == at) & (Incident.id < last_id))
        )
    query = query.order_by(Incident.reported_at.desc(), Incident.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def overdue_incidents(session: AsyncSession, now: datetime) -> list[Incident]:
    """Incidents with at least one clock past its due time, by id."""
    columns = [getattr(Incident, c) for c in DUE_COLUMNS.values()]
    query = select(Incident).where(or_(*(c < now for c in columns))).order_by(Incident.id)
    return list((await session.execute(query)).scalars())


async def record_clock_alert(
    session: AsyncSession, incident_id: str, clock: str, due_at: datetime, now: datetime
) -> bool:
    """Insert the (incident, clock, due time) alert unless it exists (ON CONFLICT DO NOTHING):
    True only for the caller whose insert took effect, so an alert is raised once."""
    inserted = await session.execute(
        insert_ignoring_conflicts(session, table_of(IncidentClockAlert)).values(
            incident_id=incident_id, clock=clock, due_at=due_at, raised_at=now
        )
    )
    return bool(inserted.rowcount)  # type: ignore[attr-defined]


COMMUNICATION_ORDER = (
    Key(IncidentCommunication.account_id),
    Key(IncidentCommunication.at),
    Key(IncidentCommunication.id),
)


async def communications_of(
    session: AsyncSession, incident_id: str, account: str | None, page: PageRequest
) -> Page:
    """A page of the incident's communication log (one account's, when given), by account
    and time."""
    query = select(IncidentCommunication).where(IncidentCommunication.incident_id == incident_id)
    if account:
        query = query.where(IncidentCommunication.account_id == account)
    return await page_of(session, query, COMMUNICATION_ORDER, page)
