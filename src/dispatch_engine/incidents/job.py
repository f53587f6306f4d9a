"""The incident clock job: report newly overdue clocks once, then send notifications.

"Once" is the database's job: a clock going overdue inserts (incident, clock, due time)
into `incident_clock_alerts` with ON CONFLICT DO NOTHING, and only the run whose insert
took effect logs `incident_clock_overdue`, counts it and queues the webhooks — so reruns
and several workers never repeat an alert. A new due time (the next 30-minute update) is a
new alert. The gauge is set from the current overdue set on every run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from dispatch_engine.clients.guarded_http import GuardedHttpClient
from dispatch_engine.context import AppContext
from dispatch_engine.db.session import AsyncSession
from dispatch_engine.incidents import notifications
from dispatch_engine.incidents.clocks import CLOCK_NAMES
from dispatch_engine.observability import incident_metrics as metrics
from dispatch_engine.store.incidents import DUE_COLUMNS, overdue_incidents, record_clock_alert

log = structlog.get_logger(__name__)
INTERVAL_SECONDS = 15.0
MAX_DRAIN_ROUNDS = 20
CLOCK_WORDS = {
    "ack": "acknowledgement",
    "update": "status update",
    "postmortem": "post-mortem",
}


@dataclass
class JobResult:
    # (incident, clock, due time, severity) of each clock newly overdue in this run
    raised: list[tuple[str, str, datetime, str | None]] = field(default_factory=list)
    overdue_now: Counter[str] = field(default_factory=Counter)
    notifications: notifications.DrainResult = field(default_factory=notifications.DrainResult)


async def report_overdue(session: AsyncSession, now: datetime) -> JobResult:
    """Inside the caller's transaction: alert rows and notification rows."""
    result = JobResult()
    for incident in await overdue_incidents(session, now):
        for clock in CLOCK_NAMES:
            due_at: datetime | None = getattr(incident, DUE_COLUMNS[clock])
            if due_at is None or not now > due_at:
                continue
            result.overdue_now[clock] += 1
            if not await record_clock_alert(session, incident.id, clock, due_at, now):
                continue
            result.raised.append((incident.id, clock, due_at, incident.severity))
            await notifications.enqueue(
                session,
                "incident.clock_overdue",
                incident,
                f"Incident {incident.id} [{incident.severity or 'unrated'}] {incident.title}: "
                f"the {CLOCK_WORDS[clock]} was due at {due_at.isoformat()} and is overdue.",
                now,
                clock={"name": clock, "due_at": due_at.isoformat()},
            )
    for clock in CLOCK_NAMES:
        metrics.OVERDUE_NOW.labels(clock=clock).set(result.overdue_now[clock])
    return result


async def run_clock_job(context: AppContext, http: GuardedHttpClient) -> JobResult:
    """One tick: report overdue clocks (one transaction), then drain the webhook outbox."""
    now = context.clock.now()
    async with context.sessions() as session, session.begin():
        result = await report_overdue(session, now)
    for incident_id, clock, due_at, severity in result.raised:  # committed: report them
        metrics.OVERDUE_TOTAL.labels(clock=clock).inc()
        log.warning(
            "incident_clock_overdue",
            incident=incident_id,
            clock=clock,
            due_at=due_at.isoformat(),
            severity=severity,
        )
    for _ in range(MAX_DRAIN_ROUNDS):
        drained = await notifications.drain(context, http)
        result.notifications.delivered += drained.delivered
        result.notifications.retried += drained.retried
        result.notifications.failed += drained.failed
        if drained.handled == 0:
            break
    return result
