"""Incidents (R-INC-1, R-INC-2): create, edit, move through states, list and filter.

Store functions only add and flush; the route owns the transaction. Every change stamps
times from the injected clock and refreshes the stored clock due times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import Conflict, ValidationFailed
from dispatch_engine.incidents import clocks
from dispatch_engine.models import Incident, IncidentAccount, new_id
from dispatch_engine.rules import incident_states as states
from dispatch_engine.schemas.cursor import decode_cursor, encode_cursor
from dispatch_engine.schemas.incidents import (
    ClockOut,
    IncidentCreate,
    IncidentFields,
    IncidentOut,
    TransitionIn,
)
from dispatch_engine.store import incidents as store
from dispatch_engine.store.accounts import known_account_ids
from dispatch_engine.store.incidents import DUE_COLUMNS
from dispatch_engine.store.incidents import IncidentFilters as IncidentFilters
from dispatch_engine.store.incidents import get_incident as get_incident

LIST_FIELDS = ("evidence_links", "stakeholders", "customer_tickets")
PLAIN_FIELDS = (
    "title",
    "service",
    "description",
    "impact",
    "severity",
    "started_at",
    "symptoms",
    "steps_to_reproduce",
    "commander",
    "communicator",
)
NOT_NULL = ("title", "service", "started_at")


async def check_incident_reference(session: AsyncSession, incident_id: str | None) -> None:
    """A pause or resume may name the incident it belongs to; that incident must exist, or
    the audit trail would point nowhere (422 on `incident`, nothing changed)."""
    if incident_id is not None and not await store.incident_exists(session, incident_id):
        raise ValidationFailed(
            "incident", f"no incident '{incident_id}'; report it with POST /v1/incidents first"
        )


async def has_postmortem(session: AsyncSession, incident_id: str) -> bool:
    return await store.find_postmortem(session, incident_id) is not None


def clock_inputs(incident: Incident, postmortem_at: datetime | None) -> clocks.ClockInputs:
    return clocks.ClockInputs(
        severity=incident.severity,
        reported_at=incident.reported_at,
        acknowledged_at=incident.acknowledged_at,
        last_update_at=incident.last_update_at,
        resolved_at=incident.resolved_at,
        postmortem_at=postmortem_at,
    )


def refresh_clocks(incident: Incident, postmortem_at: datetime | None) -> None:
    """Store each running clock's due time (NULL when stopped): what `?overdue` reads."""
    for clock in clocks.all_clocks(clock_inputs(incident, postmortem_at)):
        setattr(incident, DUE_COLUMNS[clock.name], clock.due_at)


def _out(
    incident: Incident, accounts: list[str], postmortem_at: datetime | None, now: datetime
) -> IncidentOut:
    clock_list = [
        ClockOut(
            name=c.name,
            running=c.due_at is not None,
            due_at=c.due_at,
            opens_at=c.opens_at,
            overdue=c.overdue(now),
        )
        for c in clocks.all_clocks(clock_inputs(incident, postmortem_at))
    ]
    values: dict[str, Any] = {
        name: getattr(incident, name)
        for name in (
            *PLAIN_FIELDS,
            *LIST_FIELDS,
            "id",
            "state",
            "reported_at",
            "acknowledged_at",
            "investigating_at",
            "identified_at",
            "resolved_at",
            "closed_at",
            "last_update_at",
            "updated_at",
            "version",
        )
    }
    return IncidentOut(
        **values,
        major=clocks.needs_postmortem(incident.severity),
        impacted_accounts=accounts,
        clocks=clock_list,
        overdue=any(c.overdue for c in clock_list),
        postmortem_required=clocks.needs_postmortem(incident.severity),
        postmortem_recorded=postmortem_at is not None,
    )


async def incident_out(session: AsyncSession, incident: Incident, now: datetime) -> IncidentOut:
    accounts = await store.impacted_accounts_of(session, [incident.id])
    postmortems = await store.postmortem_times(session, [incident.id])
    return _out(incident, accounts[incident.id], postmortems.get(incident.id), now)


async def _check_accounts(session: AsyncSession, account_ids: list[str], field: str) -> None:
    if not account_ids:
        return
    known = await known_account_ids(session, account_ids)
    missing = sorted(set(account_ids) - known)
    if missing:
        raise ValidationFailed(field, f"unknown account(s): {', '.join(missing[:10])}")


def _check_started(started_at: datetime | None, now: datetime) -> None:
    if started_at is not None and started_at > now:
        raise ValidationFailed("started_at", "must not be in the future")


async def _set_accounts(session: AsyncSession, incident_id: str, account_ids: list[str]) -> None:
    await store.clear_impacted_accounts(session, incident_id)
    for account_id in sorted(set(account_ids)):
        session.add(IncidentAccount(incident_id=incident_id, account_id=account_id))


async def create_incident(
    session: AsyncSession, body: IncidentCreate, now: datetime, key_id: str | None
) -> Incident:
    _check_started(body.started_at, now)
    accounts = body.impacted_accounts or []
    await _check_accounts(session, accounts, "impacted_accounts")
    incident = Incident(
        id=new_id("inc"),
        title=body.title,
        service=body.service,
        description=body.description,
        impact=body.impact,
        severity=body.severity,
        state="reported",
        started_at=body.started_at or now,
        symptoms=body.symptoms,
        steps_to_reproduce=body.steps_to_reproduce,
        evidence_links=body.evidence_links or [],
        stakeholders=body.stakeholders or [],
        commander=body.commander,
        communicator=body.communicator,
        customer_tickets=body.customer_tickets or [],
        reported_at=now,
        created_by=key_id,
        updated_at=now,
        version=1,
    )
    refresh_clocks(incident, None)
    session.add(incident)
    await session.flush()
    await _set_accounts(session, incident.id, accounts)
    await session.flush()
    return incident


def _refuse_closed(incident: Incident) -> None:
    if incident.state == "closed":
        raise Conflict(f"incident '{incident.id}' is closed", slug="incident-closed")


async def patch_incident(
    session: AsyncSession, incident: Incident, body: IncidentFields, now: datetime
) -> None:
    _refuse_closed(incident)
    changes = body.model_dump(exclude_unset=True)
    for name in (*NOT_NULL, *LIST_FIELDS, "impacted_accounts"):
        if name in changes and changes[name] is None:
            raise ValidationFailed(name, "may not be null")
    clears_severity = "severity" in changes and changes["severity"] is None
    if clears_severity and incident.severity is not None and incident.state != "reported":
        raise ValidationFailed("severity", "was agreed at acknowledgement; change it instead")
    _check_started(changes.get("started_at"), now)
    resolved = incident.resolved_at
    if changes.get("started_at") and resolved and changes["started_at"] > resolved:
        raise ValidationFailed("started_at", "must not be after the resolution")
    if "impacted_accounts" in changes:
        await _check_accounts(session, changes["impacted_accounts"], "impacted_accounts")
        await _set_accounts(session, incident.id, changes.pop("impacted_accounts"))
    for name, value in changes.items():
        setattr(incident, name, value)
    await touch(session, incident, now)


async def touch(session: AsyncSession, incident: Incident, now: datetime) -> None:
    incident.updated_at = now
    incident.version += 1
    pm = await store.find_postmortem(session, incident.id)
    refresh_clocks(incident, pm.recorded_at if pm else None)
    await session.flush()


async def transition(
    session: AsyncSession, incident: Incident, body: TransitionIn, now: datetime
) -> str:
    """Move to `body.to` if the graph allows it; returns the previous state."""
    previous = incident.state
    if not states.can_move(previous, body.to):
        allowed = list(states.allowed_from(previous))
        raise Conflict(
            f"an incident cannot go from '{previous}' to '{body.to}'"
            + (f"; allowed: {', '.join(allowed)}" if allowed else "; it is closed"),
            slug="illegal-transition",
            field_name="to",
            current_state=previous,
            allowed=allowed,
        )
    if body.to == "acknowledged":
        if body.severity is not None:
            incident.severity = body.severity
        if incident.severity is None:
            raise ValidationFailed(
                "severity", "is agreed at acknowledgement: send P1, P2, P3 or P4"
            )
    elif body.severity is not None:
        incident.severity = body.severity
    major = clocks.needs_postmortem(incident.severity)
    if body.to == "closed" and major and not await has_postmortem(session, incident.id):
        raise Conflict(
            f"a {incident.severity} incident cannot close before its post-mortem is recorded",
            slug="postmortem-required",
            field_name="to",
        )
    incident.state = body.to
    setattr(incident, states.STAMPS[body.to], now)
    await touch(session, incident, now)
    return previous


async def list_incidents(
    session: AsyncSession,
    filters: IncidentFilters,
    now: datetime,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[IncidentOut], str | None]:
    """Newest first; `next_cursor` continues after the last item."""
    after = decode_cursor(cursor) if cursor else None
    rows = await store.filtered_incidents(session, filters, now, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [r.id for r in rows]
    accounts = await store.impacted_accounts_of(session, ids)
    postmortems = await store.postmortem_times(session, ids)
    items = [_out(r, accounts[r.id], postmortems.get(r.id), now) for r in rows]
    next_cursor = encode_cursor(rows[-1].reported_at, rows[-1].id) if more and rows else None
    return items, next_cursor
