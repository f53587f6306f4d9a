"""The rule pipeline end to end: DND on a real loopback webhook (R-POL-5). The answer
decides, it is asked only for its channel inside the window, from the webhook of the
dispatch's current policy, and a failing webhook is retried, never sent, then
suppressed.

Everything goes through the HTTP API and the real worker jobs (the functions APScheduler
calls) with a frozen clock; only facts the API cannot create yet (unsubscribes, operator
pauses, responses) are written straight into the store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import templates_for
from tests.helpers import (
    ANN,
    MONDAY_10,
    OFFICE_UTC,
    Api,
    contact,
    first,
    outbox_rows,
    recipients,
    tick,
)
from tests.net import AsgiApp, Receive, Scope, Send, read_body, respond, serve, wait_for_disconnect

# --- R-POL-5: DND on a real loopback webhook ----------------------------------------------


@dataclass
class DndServer:
    port: int
    bodies: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> list[dict[str, Any] | None]:
        with self.lock:
            return [body for p, body in self.bodies if p == path]


def _dnd_app(server: DndServer) -> AsgiApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        with server.lock:
            server.bodies.append((scope["path"], parsed))
        path = scope["path"]
        try:
            if path == "/yes":
                await respond(send, 200, b'{"dnd": true}')
            elif path == "/no":
                await respond(send, 200, b'{"dnd": false}')
            elif path == "/error":
                await respond(send, 500, b'{"error": "boom"}')
            elif path == "/garbage":
                await respond(send, 200, b"\x00\xff not json at all")
            elif path == "/slow":
                await wait_for_disconnect(receive, 3)
                await respond(send, 200, b'{"dnd": false}')
            else:
                await respond(send, 404, b"{}")
        except OSError:
            pass

    return app


@pytest.fixture(scope="module")
def dnd_server() -> Iterator[DndServer]:
    server = DndServer(port=0)  # the port is known once it serves
    with serve(_dnd_app(server)) as port:
        server.port = port
        yield server


@pytest.fixture
def dnd(dnd_server: DndServer) -> DndServer:
    with dnd_server.lock:
        dnd_server.bodies.clear()
    return dnd_server


def _dnd_samples(answer: str) -> tuple[float, float]:
    """Loopback webhook calls counted with `answer`, and latencies observed for loopback."""
    calls = REGISTRY.get_sample_value(
        "dispatch_dnd_requests_total", {"host": "127.0.0.1", "answer": answer}
    )
    observed = REGISTRY.get_sample_value(
        "dispatch_dnd_latency_seconds_count", {"host": "127.0.0.1"}
    )
    return calls or 0.0, observed or 0.0


@pytest.mark.parametrize(("path", "outcome"), [("/yes", "dnd"), ("/no", "sent")])
async def test_dnd_answer_decides(
    api: Api, worker: Worker, dnd: DndServer, path: str, outcome: str
) -> None:
    answer = "dnd" if outcome == "dnd" else "allowed"
    before = _dnd_samples(answer)
    policy = await api.policy("Dnd", dnd_webhooks={"email": dnd.url(path)})
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    calls, observed = (after - earlier for after, earlier in zip(_dnd_samples(answer), before))
    assert (calls, observed) == (1, 1)  # one call counted by host and answer, one latency
    if outcome == "dnd":
        assert await api.pull() == []
        assert (message["state"], message["rule"], message["reason"]) == (
            "suppressed",
            "dnd",
            "dnd",
        )
    else:
        assert recipients(await api.pull()) == ["ann@example.com"]
        assert message["state"] == "sent"
    assert dnd.seen(path) == [
        {
            "channel": "email",
            "address": "ann@example.com",
            "account": "acme",
            "policy": policy["id"],
        }
    ]


async def test_dnd_only_asked_for_its_channel_and_inside_the_window(
    api: Api, worker: Worker, clock: FrozenClock, dnd: DndServer
) -> None:
    policy = await api.policy(
        "SmsDnd",
        [{"channel": "email", "delay": "PT0S"}, {"channel": "sms", "delay": "PT1H"}],
        dnd_webhooks={"sms": dnd.url("/yes")},
        business_rules=OFFICE_UTC,
    )
    dispatch = await api.dispatch(policy)
    clock.set(MONDAY_10.replace(hour=16, minute=30))  # the SMS comes due at 17:30: closed
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert recipients(await api.pull()) == ["ann@example.com"]  # email: no DND configured
    assert dnd.seen("/yes") == []
    clock.set(MONDAY_10.replace(hour=17, minute=30))
    await tick(worker)
    sms = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (sms["state"], sms["reason"]) == ("deferred", "deferred_business_hours")
    assert dnd.seen("/yes") == []  # a closed window never asks the webhook
    clock.set(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    await tick(worker)
    assert await api.pull() == []
    sms = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (sms["state"], sms["reason"]) == ("suppressed", "dnd")
    assert dnd.seen("/yes") == [
        {"channel": "sms", "address": "+33612345678", "account": "acme", "policy": policy["id"]}
    ]


async def test_dnd_uses_the_webhook_of_the_dispatchs_current_policy(
    api: Api, worker: Worker, clock: FrozenClock, dnd: DndServer
) -> None:
    two = [{"channel": "email", "delay": "PT0S"}, {"channel": "email", "delay": "PT1H"}]
    old = await api.policy("Old", two)
    new = await api.policy("New", two, dnd_webhooks={"email": dnd.url("/yes")})
    dispatch = await api.dispatch(old)
    await api.post(dispatch, contact(ANN, "ann"))
    await tick(worker)
    assert len(await api.pull()) == 1
    response = await api.client.patch(
        f"{api.base}/dispatches/{dispatch['id']}",
        headers=api.headers,
        json={"policy_id": new["id"], "message_templates": templates_for(new)},
    )
    assert response.status_code == 200, response.text
    clock.advance(timedelta(hours=1))
    await tick(worker)
    assert await api.pull() == []
    reminder = (await api.invite(dispatch, "ann"))["messages"][1]
    assert (reminder["state"], reminder["reason"]) == ("suppressed", "dnd")
    assert [seen and seen["policy"] for seen in dnd.seen("/yes")] == [new["id"]]


@pytest.mark.parametrize("path", ["/error", "/garbage", "/slow"])
async def test_dnd_failure_is_retried_never_sent_then_suppressed(
    api: Api,
    workers: Callable[[], Worker],
    clock: FrozenClock,
    context: AppContext,
    dnd: DndServer,
    path: str,
) -> None:
    context.settings.dnd_max_failures = 3
    context.settings.dnd_retry_seconds = 60
    context.settings.webhook_read_timeout = 0.3
    context.settings.webhook_connect_timeout = 0.3
    worker = workers()
    policy = await api.policy("Broken", dnd_webhooks={"email": dnd.url(path)})
    dispatch = await api.dispatch(policy)
    await api.post(dispatch, contact(ANN, "ann"))

    start = clock.now()
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    assert (message["state"], message["rule"], message["reason"]) == (
        "deferred",
        "dnd",
        "dnd_retry",
    )
    assert message["attempts"] == 1
    assert message["scheduled_for"] == (start + timedelta(seconds=60)).isoformat().replace(
        "+00:00", "Z"
    )
    asked = len(dnd.seen(path))
    assert asked >= 1
    # Not due again yet: not asked again, not sent.
    clock.advance(timedelta(seconds=59))
    await tick(worker)
    assert len(dnd.seen(path)) == asked
    assert await api.pull() == []

    clock.set(start + timedelta(seconds=60))
    await tick(worker)
    message = first(await api.invite(dispatch, "ann"))
    assert (message["state"], message["reason"], message["attempts"]) == (
        "deferred",
        "dnd_retry",
        2,
    )
    # The backoff grows: 60 s, then 120 s.
    assert message["scheduled_for"] == (start + timedelta(seconds=180)).isoformat().replace(
        "+00:00", "Z"
    )
    assert await api.pull() == []

    clock.set(start + timedelta(seconds=180))
    await tick(worker)
    invite = await api.invite(dispatch, "ann")
    message = first(invite)
    assert (message["state"], message["rule"], message["reason"]) == (
        "suppressed",
        "dnd",
        "dnd_unavailable",
    )
    assert invite["state"] == "completed"  # the step is skipped; the lineup had one step
    assert await api.pull() == []
    assert await outbox_rows(context) == 0
    body = {"channel": "email", "address": "ann@example.com", "account": "acme"}
    assert all(seen == {**body, "policy": policy["id"]} for seen in dnd.seen(path))
