"""SSRF rules for queue integrations: the hosts an SQS endpoint_url or a Service Bus
namespace names are checked when stored (422 naming the field) and again, resolved, when
verify connects; only an admin key chooses an SQS endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatch_engine.api.app import create_app
from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext, build_context
from tests.conftest import bearer, make_settings, new_key, setup_account
from tests.net import CountingServer, fake_dns

PATH = "/v1/accounts/acme/queue-integration"
SB_KEY = "c2VjcmV0LXNoYXJlZC1hY2Nlc3Mta2V5LXZhbHVl="


def sqs(endpoint: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "sqs",
        "queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "region": "us-east-1",
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "not-shown",
        **extra,
    }
    if endpoint is not None:
        body["endpoint_url"] = endpoint
    return body


def service_bus(endpoint: str, extra: str = "") -> dict[str, Any]:
    connection = f"Endpoint={endpoint};SharedAccessKeyName=send;SharedAccessKey={SB_KEY}{extra}"
    return {"kind": "azure_service_bus", "connection_string": connection, "queue_name": "q"}


async def _client_with(
    context: AppContext, tmp_path: Path, clock: FrozenClock, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An API on the same database under other settings, and an admin key."""
    url = context.settings.database_url or ""
    other = build_context(make_settings(url, tmp_path / "other", **settings), clock)
    try:
        transport = httpx.ASGITransport(app=create_app(other.settings, context=other))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, bearer(await new_key(other, "admin"))
    finally:
        await other.aclose()


@pytest.fixture
async def strict(
    context: AppContext, tmp_path: Path, clock: FrozenClock, client: httpx.AsyncClient
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """Plain http allowed (as in dev) but nothing allow-listed."""
    await setup_account(client, bearer(await new_key(context, "admin")), queue=False)
    async for pair in _client_with(context, tmp_path, clock, webhook_allowlist=[]):
        yield pair


@pytest.fixture
async def prod(
    context: AppContext, tmp_path: Path, clock: FrozenClock, client: httpx.AsyncClient
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """DISPATCH_ENV=prod (plain http is refused), nothing allow-listed."""
    await setup_account(client, bearer(await new_key(context, "admin")), queue=False)
    async for pair in _client_with(
        context, tmp_path, clock, env="prod", webhook_allow_http=False, webhook_allowlist=[]
    ):
        yield pair


def assert_refused(response: httpx.Response, field: str, fragment: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field, problem
    assert fragment in problem["reason"], problem
    assert "not-shown" not in response.text and SB_KEY not in response.text


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("http://169.254.169.254/", "link-local"),
        ("http://169.254.169.254:80/latest/meta-data/", "link-local"),
        ("http://10.1.2.3:4566", "private"),
        ("https://10.0.0.1", "private"),
        ("http://127.0.0.1:4566", "loopback"),
        ("http://2130706433:4566", "loopback"),  # 127.0.0.1 spelled as one number
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://localhost:4566", "local machine"),
    ],
)
async def test_a_forbidden_sqs_endpoint_is_refused_when_stored(
    strict: tuple[httpx.AsyncClient, dict[str, str]], endpoint: str, fragment: str
) -> None:
    http, admin = strict
    assert_refused(
        await http.put(PATH, headers=admin, json=sqs(endpoint)), "endpoint_url", fragment
    )
    assert (await http.get(PATH, headers=admin)).status_code == 404  # nothing stored


async def test_plain_http_endpoints_are_refused_in_production(
    prod: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    http, admin = prod
    response = await http.put(PATH, headers=admin, json=sqs("http://sqs.example.com"))
    assert_refused(response, "endpoint_url", "https is required")
    response = await http.put(PATH, headers=admin, json=sqs("https://sqs.example.com"))
    assert response.status_code == 200, response.text
    emulator = service_bus("sb://emulator.example.com/", ";UseDevelopmentEmulator=true")
    response = await http.put(PATH, headers=admin, json=emulator)
    assert_refused(response, "connection_string", "emulator")


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (service_bus("sb://169.254.169.254/"), "connection_string", "link-local"),
        (service_bus("sb://10.0.0.7:5671/"), "connection_string", "private"),
        (service_bus("sb://localhost/"), "connection_string", "local machine"),
        # The SDK reads keys in any case and takes the last endpoint: so is it checked.
        (
            service_bus("sb://acme-ns.servicebus.windows.net/", ";hostname=sb://127.0.0.1/"),
            "connection_string",
            "loopback",
        ),
        (
            {
                "kind": "azure_service_bus",
                "namespace": "acme-ns.servicebus.localhost",
                "queue_name": "q",
            },
            "namespace",
            "local machine",
        ),
    ],
)
async def test_a_forbidden_service_bus_host_is_refused_when_stored(
    strict: tuple[httpx.AsyncClient, dict[str, str]],
    body: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    http, admin = strict
    assert_refused(await http.put(PATH, headers=admin, json=body), field, fragment)


async def test_allow_listed_hosts_pass(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """The tests' settings allow-list 127.0.0.1/32 and localhost (as an on-premise
    deployment would list its own SQS-compatible server)."""
    await setup_account(client, admin, queue=False)
    for endpoint in ("http://127.0.0.1:4566", "http://localhost:4566"):
        response = await client.put(PATH, headers=admin, json=sqs(endpoint))
        assert response.status_code == 200, response.text
    response = await client.put(PATH, headers=admin, json=sqs("http://127.0.0.2:4566"))
    assert_refused(response, "endpoint_url", "loopback")


async def test_only_an_admin_key_chooses_an_sqs_endpoint(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    await setup_account(client, admin, queue=False)
    backend = bearer(await new_key(context, "backend", "acme"))
    operator = bearer(await new_key(context, "operator"))
    endpoint = "https://sqs-compatible.example.com"

    response = await client.put(PATH, headers=backend, json=sqs(endpoint))
    assert response.status_code == 403, response.text
    assert "endpoint_url" in response.json()["detail"]
    assert (await client.put(PATH, headers=operator, json=sqs(endpoint))).status_code == 403
    assert (await client.get(PATH, headers=admin)).status_code == 404

    # Without an endpoint (AWS itself) a backend key configures its queue as before.
    assert (await client.put(PATH, headers=backend, json=sqs(None))).status_code == 200
    # An admin chooses the endpoint; the backend may send the same one back (a PUT
    # replaces everything, e.g. to rotate the secret) but not change it.
    assert (await client.put(PATH, headers=admin, json=sqs(endpoint))).status_code == 200
    same = await client.put(PATH, headers=backend, json=sqs(endpoint, secret_access_key="new"))
    assert same.status_code == 200, same.text
    other = await client.put(PATH, headers=backend, json=sqs("https://elsewhere.example.com"))
    assert other.status_code == 403, other.text
    assert (await client.get(PATH, headers=admin)).json()["config"]["endpoint_url"] == endpoint


async def test_verify_never_connects_to_a_host_that_resolves_to_a_forbidden_address(
    strict: tuple[httpx.AsyncClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name passes when stored (it is only a name), then resolves to a
    loopback server that is not allow-listed; verify refuses before any connection."""
    http, admin = strict
    async with CountingServer() as server:
        asked = fake_dns(monkeypatch, {"queue.rebind.test": lambda: "127.0.0.1"})
        endpoint = f"http://queue.rebind.test:{server.port}"
        response = await http.put(PATH, headers=admin, json=sqs(endpoint))
        assert response.status_code == 200, response.text
        assert asked == []  # storing it resolves nothing

        result = (await http.post(f"{PATH}/verify", headers=admin)).json()
        assert result["ok"] is False
        assert result["error"].startswith("endpoint_url refused: ")
        assert "127.0.0.1 is loopback" in result["error"]
        assert asked and server.connections == 0


async def test_verify_refuses_an_endpoint_the_allow_list_no_longer_covers(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    strict: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    """Stored while 127.0.0.1 was allow-listed; verified by a process whose allow-list does
    not contain it: not one connection reaches the server."""
    http, strict_admin = strict
    async with CountingServer() as server:
        endpoint = f"http://127.0.0.1:{server.port}"
        response = await client.put(PATH, headers=admin, json=sqs(endpoint))
        assert response.status_code == 200, response.text
        result = (await http.post(f"{PATH}/verify", headers=strict_admin)).json()
        assert result["ok"] is False
        assert "127.0.0.1 is loopback" in result["error"]
        assert server.connections == 0
        shown = (await http.get(PATH, headers=strict_admin)).json()
        assert shown["verify_error"] == result["error"]
        # The allow-listed process does reach it (the server answers 500).
        await client.post(f"{PATH}/verify", headers=admin)
        assert server.connections > 0
