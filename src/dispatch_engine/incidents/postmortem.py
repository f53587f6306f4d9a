"""Post-mortems (R-INC-2): findings, improvement actions, link, service credits, and the
total time to resolution computed from the incident's start to its resolution."""

from __future__ import annotations

from datetime import datetime

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.errors import Conflict, NotFound, ValidationFailed
from dispatch_engine.models import Incident, IncidentPostmortem
from dispatch_engine.schemas.durations import format_duration
from dispatch_engine.schemas.incidents import PostmortemIn, PostmortemOut
from dispatch_engine.store.accounts import find_account
from dispatch_engine.store.incidents import find_postmortem


async def record_postmortem(
    session: AsyncSession, incident: Incident, body: PostmortemIn, now: datetime, key_id: str | None
) -> tuple[IncidentPostmortem, bool]:
    """Create or replace the post-mortem of a resolved incident; True when created."""
    if incident.state != "resolved":
        raise Conflict(
            f"a post-mortem is recorded once the incident is resolved (it is {incident.state})",
            slug="incident-not-resolved",
        )
    for index, credit in enumerate(body.service_credits):
        if await find_account(session, credit.account) is None:
            raise ValidationFailed(
                f"service_credits.{index}.account", f"unknown account '{credit.account}'"
            )
    credits = [c.model_dump() for c in body.service_credits]
    existing = await find_postmortem(session, incident.id)
    if existing is None:
        existing = IncidentPostmortem(
            incident_id=incident.id,
            findings=body.findings,
            improvement_actions=list(body.improvement_actions),
            link=body.link,
            service_credits=credits,
            recorded_at=now,
            recorded_by=key_id,
            updated_at=now,
        )
        session.add(existing)
        await session.flush()
        return existing, True
    existing.findings = body.findings
    existing.improvement_actions = list(body.improvement_actions)
    existing.link = body.link
    existing.service_credits = credits
    existing.updated_at = now
    await session.flush()
    return existing, False


async def get_postmortem(session: AsyncSession, incident_id: str) -> IncidentPostmortem:
    found = await find_postmortem(session, incident_id)
    if found is None:
        raise NotFound(f"post-mortem of incident '{incident_id}'")
    return found


def postmortem_out(pm: IncidentPostmortem, incident: Incident) -> PostmortemOut:
    assert incident.resolved_at is not None
    seconds = max(0, int((incident.resolved_at - incident.started_at).total_seconds()))
    return PostmortemOut(
        incident=pm.incident_id,
        findings=pm.findings,
        improvement_actions=list(pm.improvement_actions),
        link=pm.link,
        service_credits=list(pm.service_credits),
        time_to_resolution_seconds=seconds,
        time_to_resolution=format_duration(seconds),
        recorded_at=pm.recorded_at,
        updated_at=pm.updated_at,
    )
