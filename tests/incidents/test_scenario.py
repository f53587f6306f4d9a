"""A P1 from report to close, on the injected clock, through the HTTP API and the worker's
jobs: acknowledged on time, a missed 30-minute update reported once, sendings failed by the
real queue failure path, a dry run, an approval for the ones past 60 minutes, a resend
that reaches the local queue exactly once, a Resolved notice that leaves the feed after an
hour, and a post-mortem that gates closing."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import AuditRecord, IncidentClockAlert, Message
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import tick
from tests.incidents.conftest import Desk, failed_sendings


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, second, tzinfo=UTC)


def overdue_total(clock: str) -> float:
    return (
        REGISTRY.get_sample_value("dispatch_incident_clocks_overdue_total", {"clock": clock}) or 0
    )


async def test_p1_from_report_to_close(
    desk: Desk, worker: Worker, clock: FrozenClock, context: AppContext
) -> None:
    await desk.setup()
    await desk.queue("unreachable")
    path = ""

    async def call(method: str, suffix: str = "", **kwargs: Any) -> Any:
        response = await desk.call(method, path + suffix, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    # 09:00 reported (impact since 08:55); ann's invitation fails on the unreachable queue.
    incident = await desk.incident(
        title="Invitations not delivered",
        service="Invitation relay (SQS)",
        started_at="2026-03-02T08:55:00Z",
        impacted_accounts=["acme"],
        commander="Ines",
        communicator="Carl",
    )
    path = f"/v1/incidents/{incident['id']}"
    (ann,) = await failed_sendings(desk, worker, "ann@example.com")

    # 09:10 acknowledged as P1: on time.
    clock.set(at(9, 10))
    acked = await desk.move(incident, "acknowledged", severity="P1")
    clocks = {c["name"]: c for c in acked["clocks"]}
    assert not clocks["ack"]["running"] and not clocks["ack"]["overdue"]
    assert clocks["update"]["due_at"] == "2026-03-02T09:40:00Z"
    assert acked["acknowledged_at"] == "2026-03-02T09:10:00Z"
    unchanged = overdue_total("ack")
    await worker.incident_clocks()
    assert overdue_total("ack") == unchanged  # acknowledged on time: nothing to report

    # 09:41 the 30-minute update was missed: reported once however often the job runs.
    clock.set(at(9, 41))
    before = {name: overdue_total(name) for name in ("ack", "update", "postmortem")}
    with structlog.testing.capture_logs() as logs:
        await worker.incident_clocks()
        await worker.incident_clocks()
    raised = [e for e in logs if e["event"] == "incident_clock_overdue"]
    assert [(e["incident"], e["clock"]) for e in raised] == [(incident["id"], "update")]
    after = {name: overdue_total(name) for name in ("ack", "update", "postmortem")}
    assert {k: after[k] - before[k] for k in after} == {"ack": 0, "update": 1, "postmortem": 0}
    listed = await desk.call("GET", "/v1/incidents", params={"overdue": "true"})
    assert [i["id"] for i in listed.json()["items"]] == [incident["id"]]

    # 09:45 investigating notice: the clock restarts; 10:10 identified with an ETA.
    clock.set(at(9, 45))
    await desk.move(incident, "investigating")
    await call("POST", "/status-updates", json={"template": "investigating", "symptoms": "Late"})
    assert not (await call("GET"))["overdue"]
    clock.set(at(10, 10))
    await desk.move(incident, "identified")
    await call(
        "POST",
        "/status-updates",
        json={"template": "identified", "symptoms": "Late", "eta": "2026-03-02T11:30:00Z"},
    )

    # 10:30 bob's invitation fails too.
    clock.set(at(10, 30))
    (bob,) = await failed_sendings(desk, worker, "bob@example.com")

    # 10:35 the impacted sendings, as JSON and CSV.
    clock.set(at(10, 35))
    impacted = await call("GET", "/impacted-sendings")
    assert [
        (g["account"], [s["sending"] for s in g["sendings"]]) for g in impacted["accounts"]
    ] == [("acme", [ann["id"], bob["id"]])]
    csv_text = (
        await desk.call(
            "GET", path + "/impacted-sendings", headers={**desk.ops, "Accept": "text/csv"}
        )
    ).text
    rows = list(csv.reader(io.StringIO(csv_text)))
    assert [(r[2], r[7]) for r in rows[1:]] == [
        (ann["id"], "2026-03-02T09:00:00Z"),
        (bob["id"], "2026-03-02T10:30:00Z"),
    ]

    # Dry run: ann is 95 minutes late (needs an approval), bob 5 (allowed); nothing written.
    async with context.sessions() as session:
        count_before = (await session.execute(select(func.count()).select_from(Message))).scalar()
    dry = await call("POST", "/resends", json={"sendings": [ann["id"], bob["id"]], "dry_run": True})
    assert [(r["outcome"], r["window_minutes"]) for r in dry["results"]] == [
        ("needs_approval", 95),
        ("allowed", 5),
    ]
    async with context.sessions() as session:
        count_after = (await session.execute(select(func.count()).select_from(Message))).scalar()
    assert count_after == count_before

    # 10:36 the owner approves ann's resend by phone; the log records the call.
    clock.set(at(10, 36))
    approval = await call(
        "POST",
        "/approvals",
        json={
            "account": "acme",
            "approver_email": "owner@example.com",
            "approver_name": "Olivia Owner",
            "channel": "phone",
            "approved_at": "2026-03-02T10:34:00Z",
            "note": "Please resend today's invitations",
            "sendings": [ann["id"]],
        },
    )
    assert approval["role"] == "owner"
    await call(
        "POST",
        "/communications",
        json={
            "account": "acme",
            "channel": "phone",
            "recipient": "+14155550100",
            "what": "Explained the outage; got the resend approval",
            "by": "Carl",
        },
    )

    # 10:37 the queue is back; resend both — twice — and each arrives exactly once.
    clock.set(at(10, 37))
    await desk.queue("local")
    body = {"sendings": [ann["id"], bob["id"]]}
    first = await call("POST", "/resends", json=body)
    assert [r["outcome"] for r in first["results"]] == ["resent", "resent"]
    assert first["results"][0]["approval"] == approval["id"]
    await tick(worker)
    second = await call("POST", "/resends", json=body)
    assert [r["outcome"] for r in second["results"]] == ["already_resent", "already_resent"]
    assert [r["resend"] for r in second["results"]] == [r["resend"] for r in first["results"]]
    await tick(worker)
    clock.set(at(10, 38))
    await tick(worker)
    arrived = await desk.pull()
    assert sorted((b["resend_of"], b["message_id"]) for b in arrived) == sorted(
        (r["sending"], r["resend"]) for r in first["results"]
    )
    assert await desk.pull() == []
    assert (await desk.message_of("ann@example.com"))["state"] == "failed"  # history kept

    # 10:39 resolved, with a Resolved notice that leaves the feed one hour later.
    clock.set(at(10, 39))
    resolved = await desk.move(incident, "resolved")
    assert resolved["resolved_at"] == "2026-03-02T10:39:00Z"
    await call("POST", "/status-updates", json={"template": "resolved"})
    clock.set(at(11, 38, 59))
    feed = (await desk.client.get("/v1/status-feed")).json()["notices"]
    assert [n["template"] for n in feed] == ["resolved"]
    clock.set(at(11, 39))
    assert (await desk.client.get("/v1/status-feed")).json()["notices"] == []

    # Closing waits for the post-mortem.
    refused = await desk.call("POST", path + "/transitions", json={"to": "closed"})
    assert refused.status_code == 409
    assert refused.json()["type"].endswith(":postmortem-required")
    clock.set(at(11, 40))
    pm = await call(
        "PUT",
        "/postmortem",
        json={
            "findings": "Expired SQS credentials.",
            "improvement_actions": ["Alert 14 days before credentials expire"],
            "link": "https://wiki.example/postmortems/relay-2026-03-02",
            "service_credits": [{"account": "acme", "credit": "5% of March"}],
        },
    )
    assert (pm["time_to_resolution"], pm["time_to_resolution_seconds"]) == ("PT1H44M", 6240)
    closed = await desk.move(incident, "closed")
    assert (closed["state"], closed["closed_at"]) == ("closed", "2026-03-02T11:40:00Z")
    assert not closed["overdue"] and not any(c["running"] for c in closed["clocks"])

    await worker.incident_clocks()
    async with context.sessions() as session:
        alerts = list((await session.execute(select(IncidentClockAlert))).scalars())
        actions = list(
            (
                await session.execute(
                    select(AuditRecord.action)
                    .where(AuditRecord.incident == incident["id"])
                    .order_by(AuditRecord.at, AuditRecord.id)
                )
            ).scalars()
        )
    assert [(a.clock, a.due_at) for a in alerts] == [("update", at(9, 40))]
    assert actions.count("incident.resend") == 2
    for action in (
        "incident.create",
        "incident.acknowledged",
        "incident.approval",
        "incident.communication",
        "incident.postmortem",
        "incident.closed",
    ):
        assert action in actions, action
    log = await call("GET", "/communications", params={"account": "acme"})
    assert [e["by"] for e in log] == ["Carl"]
