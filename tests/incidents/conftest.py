"""Helpers for the incident tests: an operator key, incidents through the API, and FAILED
sendings made by the real failure path (an unreachable SQS queue, relay gives up at once)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.scheduler.worker import Worker
from tests.conftest import bearer, create_policy, new_key, setup_account, templates_for
from tests.helpers import ONE_EMAIL, Api, tick


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused, fast)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def ops(context: AppContext) -> dict[str, str]:
    return bearer(await new_key(context, "operator"))


@pytest.fixture
async def worker(context: AppContext) -> AsyncIterator[Worker]:
    """A worker whose relay gives up after the first failed push (a message then `failed`)."""
    context.settings.relay_max_attempts = 1
    runner = Worker(context)
    yield runner
    await runner.shutdown(0)


class Desk:
    """The account `acme` with a one-email policy, and incident calls as an operator."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        ops: dict[str, str],
        clock: FrozenClock,
    ) -> None:
        self.client = client
        self.clock = clock
        self.admin = admin
        self.ops = ops
        self.dispatches: dict[str, str] = {}

    async def setup(self, account: str = "acme") -> None:
        await setup_account(self.client, self.admin, account)
        policy = await create_policy(self.client, self.admin, account, lineup=ONE_EMAIL)
        response = await self.client.post(
            f"/v1/accounts/{account}/dispatches",
            headers=self.admin,
            json={
                "questionnaire_id": "nps",
                "policy_id": policy["id"],
                "token_validity": "P30D",
                "message_templates": templates_for(policy),
            },
        )
        assert response.status_code == 201, response.text
        self.dispatches[account] = response.json()["id"]

    async def queue(self, kind: str, account: str = "acme") -> None:
        body: dict[str, Any] = {"kind": "local"}
        if kind == "unreachable":
            port = closed_port()
            body = {
                "kind": "sqs",
                "queue_url": f"http://127.0.0.1:{port}/123456789012/q",
                "region": "us-east-1",
                "endpoint_url": f"http://127.0.0.1:{port}",
                "access_key_id": "x",
                "secret_access_key": "y",
            }
        response = await self.client.put(
            f"/v1/accounts/{account}/queue-integration", headers=self.admin, json=body
        )
        assert response.status_code == 200, response.text

    async def post_contacts(self, *emails: str, account: str = "acme") -> None:
        response = await self.client.post(
            f"/v1/accounts/{account}/dispatches/{self.dispatches[account]}/contacts",
            headers=self.admin,
            json={"contacts": [{"email": e, "external_id": e} for e in emails]},
        )
        assert response.status_code == 202, response.text

    async def message_of(self, email: str, account: str = "acme") -> dict[str, Any]:
        response = await self.client.get(
            f"/v1/accounts/{account}/invites", headers=self.admin, params={"external_id": email}
        )
        assert response.status_code == 200, response.text
        messages: list[dict[str, Any]] = response.json()[0]["messages"]
        return messages[0]

    async def pull(self, account: str = "acme") -> list[dict[str, Any]]:
        return await Api(self.client, self.admin, account).pull()

    async def incident(self, **fields: Any) -> dict[str, Any]:
        body = {"title": "Queue outage", "service": "Invitation relay", **fields}
        response = await self.client.post("/v1/incidents", headers=self.ops, json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def move(self, incident: dict[str, Any], *steps: str, **body: Any) -> dict[str, Any]:
        result = incident
        for step in steps:
            response = await self.client.post(
                f"/v1/incidents/{incident['id']}/transitions",
                headers=self.ops,
                json={"to": step, **body},
            )
            assert response.status_code == 200, response.text
            result = response.json()
        return result

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(method, path, headers=headers or self.ops, **kwargs)


@pytest.fixture
def desk(
    client: httpx.AsyncClient, admin: dict[str, str], ops: dict[str, str], clock: FrozenClock
) -> Desk:
    return Desk(client, admin, ops, clock)


async def failed_sendings(
    desk: Desk, worker: Worker, *emails: str, account: str = "acme"
) -> list[dict[str, Any]]:
    """Post contacts now and push them to an unreachable queue: each message ends `failed`."""
    await desk.post_contacts(*emails, account=account)
    await tick(worker)
    messages = [await desk.message_of(e, account) for e in emails]
    assert [m["state"] for m in messages] == ["failed"] * len(emails), messages
    return messages
