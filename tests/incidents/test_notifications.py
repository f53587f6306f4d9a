"""Incident notification webhooks (R-INC-8) against a real loopback HTTP server, through the
worker's SSRF-guarded client: configuration, every event kind, filtering, retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from sqlalchemy import select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import IncidentNotification
from dispatch_engine.scheduler.worker import Worker
from tests.incidents.conftest import Desk
from tests.net import AsgiApp, Receive, Scope, Send, read_body, serve

MIN = timedelta(minutes=1)


@dataclass
class Inbox:
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, body: dict[str, Any]) -> int:
        with self.lock:
            self.received.append((path, body))
            return sum(1 for p, _ in self.received if p == path)

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, body in self.received if p == path]


def _app(inbox: Inbox) -> AsgiApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        path = scope["path"]
        count = inbox.add(path, json.loads(raw))
        status = 200
        if path == "/gone" or (path == "/flaky" and count == 1):
            status = 404 if path == "/gone" else 503
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.fixture(scope="module")
def hooks() -> Iterator[tuple[str, Inbox]]:
    """A loopback server (uvicorn in a thread); yields its base URL and what it received."""
    inbox = Inbox()
    with serve(_app(inbox)) as port:
        yield f"http://127.0.0.1:{port}", inbox


@pytest.fixture
def inbox(hooks: tuple[str, Inbox]) -> Inbox:
    hooks[1].received.clear()
    return hooks[1]


async def _webhook(desk: Desk, url: str, **body: Any) -> dict[str, Any]:
    response = await desk.call(
        "POST", "/v1/admin/notification-webhooks", json={"name": "ops", "url": url, **body}
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_webhook_configuration_is_ssrf_checked(desk: Desk, hooks: tuple[str, Inbox]) -> None:
    base, _ = hooks
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "ftp://hooks.example.com/x",
        "http://user:pw@hooks.example.com/x",
        "http://[::1]:9/x",
        "http://0x7f000002:9/x",
    ):
        response = await desk.call(
            "POST", "/v1/admin/notification-webhooks", json={"name": "x", "url": url}
        )
        assert (response.status_code, response.json().get("field")) == (422, "url"), url
    created = await _webhook(desk, f"{base}/services/T000/B000/secret-token")
    assert created["origin"] == base
    assert "secret-token" not in json.dumps(created)
    assert created["events"] == [
        "incident.created",
        "incident.state_changed",
        "incident.status_update",
        "incident.clock_overdue",
    ]
    listed = (await desk.call("GET", "/v1/admin/notification-webhooks")).json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret-token" not in json.dumps(listed)
    path = f"/v1/admin/notification-webhooks/{created['id']}"
    assert (await desk.call("DELETE", path)).status_code == 204
    assert (await desk.call("DELETE", path)).status_code == 404


async def test_every_event_reaches_the_webhooks_once(
    desk: Desk,
    worker: Worker,
    clock: FrozenClock,
    hooks: tuple[str, Inbox],
    inbox: Inbox,
) -> None:
    base, _ = hooks
    await _webhook(desk, f"{base}/all")
    await _webhook(desk, f"{base}/overdue-only", events=["incident.clock_overdue"])
    incident = await desk.incident(title="Relay down")
    assert inbox.received == []  # nothing is sent inside the request
    await desk.move(incident, "acknowledged", severity="P1")
    posted = await desk.call(
        "POST",
        f"/v1/incidents/{incident['id']}/status-updates",
        json={"template": "investigating", "symptoms": "Invitations are late"},
    )
    assert posted.status_code == 201
    await worker.incident_clocks()
    received = inbox.at("/all")
    assert [b["event"] for b in received] == [
        "incident.created",
        "incident.state_changed",
        "incident.status_update",
    ]
    for body in received:
        assert isinstance(body["text"], str) and incident["id"] in body["text"]
        assert body["incident"]["id"] == incident["id"]
    assert received[1]["previous_state"] == "reported"
    assert "reported → acknowledged" in received[1]["text"]
    assert received[2]["status_update"]["template"] == "investigating"
    assert inbox.at("/overdue-only") == []

    clock.advance(31 * MIN)  # the 30-minute update is missed
    before = REGISTRY.get_sample_value(
        "dispatch_incident_clocks_overdue_total", {"clock": "update"}
    )
    with structlog.testing.capture_logs() as logs:
        await worker.incident_clocks()
        await worker.incident_clocks()
    after = REGISTRY.get_sample_value("dispatch_incident_clocks_overdue_total", {"clock": "update"})
    assert (after or 0) - (before or 0) == 1
    events = [e for e in logs if e["event"] == "incident_clock_overdue"]
    assert [(e["incident"], e["clock"]) for e in events] == [(incident["id"], "update")]
    assert REGISTRY.get_sample_value("dispatch_incident_clocks_overdue", {"clock": "update"}) == 1
    overdue = inbox.at("/overdue-only")
    assert [(b["event"], b["clock"]["name"]) for b in overdue] == [
        ("incident.clock_overdue", "update")
    ]
    assert "status update" in overdue[0]["text"]
    assert [b["event"] for b in inbox.at("/all")][-1] == "incident.clock_overdue"
    assert len(inbox.at("/all")) == 4


async def test_failed_deliveries_are_retried_with_backoff(
    desk: Desk,
    worker: Worker,
    clock: FrozenClock,
    context: AppContext,
    hooks: tuple[str, Inbox],
    inbox: Inbox,
) -> None:
    base, _ = hooks
    await _webhook(desk, f"{base}/flaky")
    await _webhook(desk, f"{base}/gone")
    await desk.incident()
    await worker.incident_clocks()
    assert len(inbox.at("/flaky")) == 1 and len(inbox.at("/gone")) == 1
    clock.advance(timedelta(seconds=5))
    await worker.incident_clocks()  # backoff not over yet
    assert len(inbox.at("/flaky")) == 1
    clock.advance(timedelta(seconds=6))
    await worker.incident_clocks()
    assert len(inbox.at("/flaky")) == 2
    clock.advance(5 * MIN)  # long after any backoff (and before the ack clock runs out)
    await worker.incident_clocks()
    assert len(inbox.at("/flaky")) == 2 and len(inbox.at("/gone")) == 1
    async with context.sessions() as session:
        rows = list((await session.execute(select(IncidentNotification))).scalars())
    assert len(rows) == 2
    delivered = [r for r in rows if r.delivered_at is not None]
    failed = [r for r in rows if r.failed_at is not None]
    assert [r.attempts for r in delivered] == [2]
    assert [(r.attempts, r.last_error) for r in failed] == [(1, f"HTTP 404 from {base}")]
