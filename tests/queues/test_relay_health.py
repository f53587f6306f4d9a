"""What the relay shows on a queue integration, and how one broken queue is kept from
holding up the others (issue 6: "auth errors surfaced on the integration", "a
per-integration circuit breaker so one broken account does not slow others").

A push the queue refuses as a whole (credentials, rights, a missing queue, an outage) is
shown on `GET …/queue-integration` as `push_error` / `push_error_at` until a push goes
through, a probe succeeds, or the integration is replaced. Runs the real relay against
moto's SQS server, a closed loopback port, and the Service Bus adapter at the SDK boundary.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import httpx
from azure.servicebus._pyamqp.error import AuthenticationException, ErrorCondition
from prometheus_client import REGISTRY
from sqlalchemy import select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import OutboxEntry, QueueIntegration
from dispatch_engine.queues.base import QueueSender
from dispatch_engine.queues.servicebus import ServiceBusQueueSender
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import setup_account
from tests.procs import ALL_WEEK
from tests.queues.conftest import KEY, REGION, SECRET, Moto, free_port
from tests.queues.test_servicebus import CONNECTION_STRING, Factory, FakeClient, sdk_error

MINUTE = timedelta(minutes=1)


def as_shown(clock: FrozenClock) -> str:
    """The clock's time as the API writes it (RFC 3339, UTC as `Z`)."""
    return clock.now().isoformat().replace("+00:00", "Z")


def refusing() -> float | None:
    return REGISTRY.get_sample_value("dispatch_queue_integrations_refusing")


async def dispatch_for(client: httpx.AsyncClient, admin: dict[str, str], account: str) -> str:
    """An account with a one-email policy open all week, and a dispatch through it."""
    await setup_account(client, admin, account)  # a local queue first: policies need one
    base = f"/v1/accounts/{account}"
    policy = await client.post(
        f"{base}/policies",
        headers=admin,
        json={
            "name": "Now",
            "lineup": [{"channel": "email", "delay": "PT0S"}],
            "business_rules": {"time_zone": "UTC", "days": ALL_WEEK},
        },
    )
    assert policy.status_code == 201, policy.text
    step = policy.json()["lineup"][0]["id"]
    dispatch = await client.post(
        f"{base}/dispatches",
        headers=admin,
        json={
            "questionnaire_id": "q",
            "policy_id": policy.json()["id"],
            "token_validity": "P7D",
            "message_templates": {step: "tpl"},
        },
    )
    assert dispatch.status_code == 201, dispatch.text
    return str(dispatch.json()["id"])


async def post_contact(
    client: httpx.AsyncClient, admin: dict[str, str], account: str, dispatch: str, name: str
) -> None:
    posted = await client.post(
        f"/v1/accounts/{account}/dispatches/{dispatch}/contacts",
        headers=admin,
        json={"contacts": [{"email": f"{name}@example.com", "external_id": name}]},
    )
    assert posted.status_code == 202, posted.text
    assert posted.json()["counts"]["accepted"] == 1


async def put_queue(
    client: httpx.AsyncClient, admin: dict[str, str], account: str, body: dict[str, Any]
) -> None:
    response = await client.put(
        f"/v1/accounts/{account}/queue-integration", headers=admin, json=body
    )
    assert response.status_code == 200, response.text


def sqs_at(endpoint: str, queue_url: str) -> dict[str, Any]:
    return {
        "kind": "sqs",
        "queue_url": queue_url,
        "region": REGION,
        "endpoint_url": endpoint,
        "access_key_id": KEY,
        "secret_access_key": SECRET,
    }


async def shown(client: httpx.AsyncClient, admin: dict[str, str], account: str) -> Any:
    response = await client.get(f"/v1/accounts/{account}/queue-integration", headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


async def message_of(
    client: httpx.AsyncClient, admin: dict[str, str], account: str, name: str
) -> Any:
    response = await client.get(
        f"/v1/accounts/{account}/invites", headers=admin, params={"external_id": name}
    )
    assert response.status_code == 200, response.text
    return response.json()[0]["messages"][0]


async def test_a_missing_queue_shows_on_the_integration_until_a_push_goes_through(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    clock: FrozenClock,
    worker: Worker,
    moto_server: Moto,
) -> None:
    name = f"later-{secrets.token_hex(4)}"
    queue_url = f"{moto_server.endpoint_url}/123456789012/{name}"
    dispatch = await dispatch_for(client, admin, "acme")
    await put_queue(client, admin, "acme", sqs_at(moto_server.endpoint_url, queue_url))
    assert (await shown(client, admin, "acme"))["push_error"] is None

    await post_contact(client, admin, "acme", dispatch, "ann")
    await worker.deliver()
    await worker.relay_outbox()
    integration = await shown(client, admin, "acme")
    assert "does not exist" in integration["push_error"]
    assert name not in integration["push_error"] and "127.0.0.1" not in integration["push_error"]
    assert integration["push_error_at"] == as_shown(clock)
    ann = await message_of(client, admin, "acme", "ann")
    assert ann["state"] == "failed" and "does not exist" in ann["reason"]

    # Someone creates the queue: the next invitation goes through and the error is cleared.
    async with moto_server.client() as sqs:
        assert (await sqs.create_queue(QueueName=name))["QueueUrl"] == queue_url
    clock.advance(MINUTE)
    await post_contact(client, admin, "acme", dispatch, "bob")
    await worker.deliver()
    await worker.relay_outbox()
    integration = await shown(client, admin, "acme")
    assert (integration["push_error"], integration["push_error_at"]) == (None, None)
    assert (await message_of(client, admin, "acme", "bob"))["state"] == "sent"


async def test_an_outage_is_shown_from_when_it_began_and_a_replaced_integration_starts_clean(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    clock: FrozenClock,
    context: AppContext,
    worker: Worker,
) -> None:
    context.settings.relay_breaker_threshold = 100  # this test is about the error shown
    port = free_port()  # nothing listens there
    endpoint = f"http://127.0.0.1:{port}"
    dispatch = await dispatch_for(client, admin, "acme")
    await put_queue(client, admin, "acme", sqs_at(endpoint, f"{endpoint}/123456789012/q"))
    await post_contact(client, admin, "acme", dispatch, "ann")
    await worker.deliver()
    began = as_shown(clock)
    await worker.relay_outbox()
    integration = await shown(client, admin, "acme")
    assert integration["push_error"].startswith("queue unreachable: ")
    assert str(port) not in integration["push_error"]
    assert integration["push_error_at"] == began
    assert refusing() == 1  # the gauge to alert on

    clock.advance(10 * MINUTE)  # past the backoff: pushed again, refused again
    await worker.relay_outbox()
    async with context.sessions() as session:
        row = (await session.execute(select(OutboxEntry))).scalar_one()
    assert row.attempts == 2 and row.failed_at is None  # kept for a retry, never lost
    assert (await shown(client, admin, "acme"))["push_error_at"] == began  # since when

    await put_queue(client, admin, "acme", {"kind": "local"})
    integration = await shown(client, admin, "acme")
    assert (integration["push_error"], integration["push_error_at"]) == (None, None)
    clock.advance(10 * MINUTE)
    await worker.relay_outbox()  # the waiting message goes to the new queue
    assert (await message_of(client, admin, "acme", "ann"))["state"] == "sent"
    assert (await shown(client, admin, "acme"))["push_error"] is None
    assert refusing() == 0


async def test_refused_credentials_on_service_bus_show_on_the_integration(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    context: AppContext,
    worker: Worker,
) -> None:
    dispatch = await dispatch_for(client, admin, "acme")
    await put_queue(
        client,
        admin,
        "acme",
        {
            "kind": "azure_service_bus",
            "connection_string": CONNECTION_STRING,
            "queue_name": "invitations",
        },
    )
    broker = FakeClient()
    broker.prepare("invitations").send_errors[1] = sdk_error(
        AuthenticationException(
            ErrorCondition.ClientError, description=f"status-code: 401, {CONNECTION_STRING}"
        )
    )

    def at_the_sdk_boundary(integration: QueueIntegration) -> QueueSender | None:
        return ServiceBusQueueSender(
            connection_string=CONNECTION_STRING,
            queue_name="invitations",
            client_factory=Factory(broker),
        )

    worker.senders._build = at_the_sdk_boundary  # type: ignore[method-assign]
    await post_contact(client, admin, "acme", dispatch, "ann")
    await worker.deliver()
    await worker.relay_outbox()
    integration = await shown(client, admin, "acme")
    assert integration["push_error"].startswith("authentication failed")
    assert "SharedAccessKey" not in integration["push_error"]
    assert "acme-ns" not in integration["push_error"]
    assert (await message_of(client, admin, "acme", "ann"))["state"] == "failed"


async def test_one_broken_queue_is_left_alone_for_the_cooldown_while_others_flow(
    client: httpx.AsyncClient, admin: dict[str, str], clock: FrozenClock, context: AppContext
) -> None:
    context.settings.relay_breaker_threshold = 2
    context.settings.relay_breaker_cooldown_seconds = 30 * 60
    worker = Worker(context)  # the breaker reads the settings when the relay is built
    try:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        broken = await dispatch_for(client, admin, "broken")
        await put_queue(client, admin, "broken", sqs_at(endpoint, f"{endpoint}/123456789012/q"))
        healthy = await dispatch_for(client, admin, "healthy")
        await put_queue(client, admin, "healthy", {"kind": "local"})

        await post_contact(client, admin, "broken", broken, "ann")
        await worker.deliver()
        for _ in range(2):  # two failed pushes open the circuit
            await worker.relay_outbox()
            clock.advance(10 * MINUTE)
        async with context.sessions() as session:
            row = (await session.execute(select(OutboxEntry))).scalar_one()
        assert row.attempts == 2 and row.last_error.startswith("queue unreachable")

        # While it is open the broken queue is not called; the healthy account's messages go.
        await post_contact(client, admin, "healthy", healthy, "bob")
        await worker.deliver()
        await worker.relay_outbox()
        assert (await message_of(client, admin, "healthy", "bob"))["state"] == "sent"
        async with context.sessions() as session:
            row = (await session.execute(select(OutboxEntry))).scalar_one()
        assert row.attempts == 2  # a round left alone is not an attempt
        assert row.last_error.startswith("circuit open")
        assert (await message_of(client, admin, "broken", "ann"))["state"] == "sent"

        # After the cooldown one push is tried again (still refused; nothing is lost).
        clock.advance(31 * MINUTE)
        await worker.relay_outbox()
        async with context.sessions() as session:
            row = (await session.execute(select(OutboxEntry))).scalar_one()
        assert row.attempts == 3 and row.failed_at is None
        assert row.last_error.startswith("queue unreachable")
    finally:
        await worker.shutdown(0)


async def test_a_probe_that_goes_through_clears_the_error(
    client: httpx.AsyncClient, admin: dict[str, str], worker: Worker, moto_server: Moto
) -> None:
    name = f"fixed-{secrets.token_hex(4)}"
    queue_url = f"{moto_server.endpoint_url}/123456789012/{name}"
    dispatch = await dispatch_for(client, admin, "acme")
    await put_queue(client, admin, "acme", sqs_at(moto_server.endpoint_url, queue_url))
    await post_contact(client, admin, "acme", dispatch, "ann")
    await worker.deliver()
    await worker.relay_outbox()
    assert (await shown(client, admin, "acme"))["push_error"] is not None

    async with moto_server.client() as sqs:
        await sqs.create_queue(QueueName=name)
    verified = await client.post("/v1/accounts/acme/queue-integration/verify", headers=admin)
    assert verified.status_code == 200 and verified.json()["ok"] is True, verified.text
    integration = await shown(client, admin, "acme")
    assert (integration["push_error"], integration["push_error_at"]) == (None, None)


async def test_lanes_reporting_the_same_error_keep_the_time_it_began(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    clock: FrozenClock,
    context: AppContext,
    worker: Worker,
) -> None:
    await dispatch_for(client, admin, "acme")
    async with context.sessions() as session:
        integration = await session.get(QueueIntegration, "acme")
        assert integration is not None
        session.expunge(integration)  # as every lane loaded it: no error shown yet
    began = as_shown(clock)
    for _lane in range(2):
        async with context.sessions() as session, session.begin():
            await worker.relay._record_queue_health(
                session, [(integration, "queue unreachable: ConnectionRefused")], clock.now()
            )
        clock.advance(MINUTE)
    shown_now = await shown(client, admin, "acme")
    assert shown_now["push_error"] == "queue unreachable: ConnectionRefused"
    assert shown_now["push_error_at"] == began
