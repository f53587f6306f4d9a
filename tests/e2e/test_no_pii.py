"""No PII, tokens or secrets in logs, metrics or error bodies (issue: production, logs)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.exc import IntegrityError

from dispatch_engine.api.app import create_app
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.incidents import communications
from dispatch_engine.observability.logging import configure_logging
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import setup_account, templates_for
from tests.procs import free_port

EMAILS = ["ann.private@example.com", "bob.secret@example.org", "carla@example.net"]
PHONES = ["+33612345678", "+14155552671"]
SECRET = "sqs-secret-key-do-not-log"


async def test_an_end_to_end_run_leaks_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    clock: FrozenClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("DEBUG", json=True)
    try:
        await setup_account(client, admin)
        bodies: list[str] = []
        # A secret that must stay write-only (then back to the local queue).
        bodies.append(
            (
                await client.put(
                    "/v1/accounts/acme/queue-integration",
                    headers=admin,
                    json={
                        "kind": "sqs",
                        "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
                        "region": "eu-west-1",
                        "access_key_id": "AKIDEXAMPLE",
                        "secret_access_key": SECRET,
                    },
                )
            ).text
        )
        await client.put(
            "/v1/accounts/acme/queue-integration", headers=admin, json={"kind": "local"}
        )
        policy = (
            await client.post(
                "/v1/accounts/acme/policies",
                headers=admin,
                json={
                    "name": "P",
                    "lineup": [
                        {"channel": "email", "delay": "PT0S"},
                        {"channel": "sms", "delay": "PT1H"},
                    ],
                },
            )
        ).json()
        dispatch = (
            await client.post(
                "/v1/accounts/acme/dispatches",
                headers=admin,
                json={
                    "questionnaire_id": "q",
                    "policy_id": policy["id"],
                    "token_validity": "P7D",
                    "message_templates": templates_for(policy),
                },
            )
        ).json()
        csv = "email,mobile,external_id\n" + "".join(
            f"{email},{PHONES[i % 2]},x{i}\n" for i, email in enumerate(EMAILS)
        )
        csv += "not-an-email-but-private@@example.com,,bad\n"  # a rejected row
        csv += "dora@example.com,+999123,bad2\n"  # a rejected phone
        upload = await client.post(
            f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
            headers={**admin, "Content-Type": "text/csv"},
            content=csv.encode(),
        )
        bodies.append(upload.text)
        invites = [
            (await client.get(f"/v1/accounts/acme/invites?external_id=x{i}", headers=admin)).json()[
                0
            ]
            for i in range(len(EMAILS))
        ]
        tokens = [invite["token"] for invite in invites]
        bodies.append(
            (
                await client.post(
                    "/v1/accounts/acme/events",
                    headers=admin,
                    json={
                        "type": "unsubscribe",
                        "channel": "email",
                        "address": "carla@@example.net",
                    },
                )
            ).text
        )
        await client.post(
            "/v1/accounts/acme/events",
            headers=admin,
            json={"type": "unsubscribe", "channel": "email", "address": EMAILS[2]},
        )
        await client.post(
            "/v1/accounts/acme/events", headers=admin, json={"type": "response", "token": tokens[1]}
        )
        worker = Worker(context)
        try:
            await worker.deliver()
            await worker.relay_outbox()
            await worker.maintain()
        finally:
            await worker.shutdown(0)
        bodies.append(
            (await client.get(f"/v1/accounts/acme/invites?token={tokens[0]}", headers=admin)).text
        )
        metrics_text = (await client.get("/metrics")).text
        logging.getLogger("dispatch_engine").info("flush")
    finally:
        configure_logging("INFO", json=True)
    captured = capsys.readouterr()
    logs = captured.err + captured.out
    assert '"event": "request"' in logs  # the request log is there…
    forbidden = [*EMAILS, *PHONES, SECRET, "AKIDEXAMPLE", "dora@example.com", "+999123"]
    for value in forbidden:
        assert value not in logs, f"{value!r} in logs"
        assert value not in metrics_text, f"{value!r} in metrics"
    for token in tokens:
        assert token not in logs and token not in metrics_text
    for body in bodies[:3]:  # error and write responses: no PII, no secret
        for value in [*EMAILS, SECRET, "not-an-email-but-private", "carla@@example.net", "+999123"]:
            assert value not in body, f"{value!r} in {body[:200]}"
    assert "dispatch_messages_total" in metrics_text


LEAKED = "pii.recipient@example.com"


class _Server:
    """The app behind a real uvicorn, in this process: what a server prints on stderr for an
    error is part of what is checked (uvicorn logs an error the app re-raises)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            assert not self.task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    async def __aexit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task


async def test_a_server_error_shows_its_type_but_no_values(
    context: AppContext,
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database error quoting an address in its parameters and in the DBAPI message (as
    PostgreSQL's "Key (…)=(…) already exists" does) becomes a 500 with the error's type; the
    address is neither in the answer nor on stderr."""

    async def failing_insert(*_args: object, **_kwargs: object) -> None:
        raise IntegrityError(
            "INSERT INTO incident_communications (recipient) VALUES (?)",
            {"recipient": LEAKED},
            Exception(f"duplicate key: Key (recipient)=({LEAKED}) already exists"),
        )

    monkeypatch.setattr(communications, "record_communication", failing_insert)
    configure_logging("DEBUG", json=True)
    try:
        async with (
            _Server(create_app(context.settings, context=context)) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            await setup_account(http, admin)
            incident = await http.post(
                "/v1/incidents", headers=admin, json={"title": "Relay down", "service": "SQS"}
            )
            assert incident.status_code == 201, incident.text
            response = await http.post(
                f"/v1/incidents/{incident.json()['id']}/communications",
                headers=admin,
                json={
                    "account": "acme",
                    "channel": "direct_email",
                    "recipient": LEAKED,
                    "what": "Sent the notice",
                },
            )
    finally:
        configure_logging("INFO", json=True)
    captured = capsys.readouterr()
    logs = captured.err + captured.out
    assert response.status_code == 500, response.text
    problem = response.json()
    assert problem["type"] == "urn:dispatch-engine:problem:internal-error"
    assert problem["error_type"] == "IntegrityError"
    assert problem["request_id"] == response.headers["X-Request-ID"]
    assert LEAKED not in response.text
    assert '"event": "unhandled_error"' in logs and "IntegrityError" in logs
    assert LEAKED not in logs, [line for line in logs.splitlines() if LEAKED in line]
    assert "duplicate key" not in logs  # the DBAPI error's message is not logged either
