"""R-ACC-3: queue integrations (sqs, azure_service_bus, local); secrets are write-only."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import QueueIntegration
from dispatch_engine.queues.factory import integration_secrets
from tests.conftest import bearer, new_key, setup_account

PATH = "/v1/accounts/acme/queue-integration"
SQS_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/invitations"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SB_KEY = "c2VjcmV0LXNoYXJlZC1hY2Nlc3Mta2V5LXZhbHVl="
SB_CONNECTION = (
    "Endpoint=sb://ns-name.servicebus.windows.net/;SharedAccessKeyName=send;"
    f"SharedAccessKey={SB_KEY}"
)


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await setup_account(client, admin, "acme", queue=False)


async def _put(client: httpx.AsyncClient, headers: dict[str, str], body: Any) -> httpx.Response:
    return await client.put(PATH, headers=headers, json=body)


async def _stored(context: AppContext, account: str = "acme") -> QueueIntegration:
    async with context.sessions() as session:
        return (
            await session.execute(
                select(QueueIntegration).where(QueueIntegration.account_id == account)
            )
        ).scalar_one()


async def _audit_text(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.get(
        "/v1/admin/audit", headers=headers, params={"target_type": "queue_integration"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["items"], "the PUT was not audited"
    return response.text


@pytest.mark.usefixtures("acme")
async def test_get_before_put_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get(PATH, headers=admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    response = await client.post(f"{PATH}/verify", headers=admin)
    assert response.status_code == 404


async def test_unknown_account_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.put(
        "/v1/accounts/ghost/queue-integration", headers=admin, json={"kind": "local"}
    )
    assert response.status_code == 404
    assert (
        await client.get("/v1/accounts/ghost/queue-integration", headers=admin)
    ).status_code == 404


@pytest.mark.usefixtures("acme")
async def test_local(client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]) -> None:
    response = await _put(client, admin, {"kind": "local"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["account"] == "acme"
    assert out["kind"] == "local"
    assert out["secret_set"] is False
    assert out["fifo"] is False
    assert out["version"] == 1
    assert (await client.get(PATH, headers=admin)).json() == out
    assert (await _stored(context)).secret is None


@pytest.mark.usefixtures("acme")
async def test_sqs_standard_without_credentials(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await _put(
        client, admin, {"kind": "sqs", "queue_url": SQS_URL, "region": "eu-west-1"}
    )
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["kind"] == "sqs"
    assert out["fifo"] is False
    assert out["secret_set"] is False
    assert out["config"]["queue_url"] == SQS_URL
    assert out["config"]["region"] == "eu-west-1"


@pytest.mark.usefixtures("acme")
async def test_sqs_fifo_detected(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {"kind": "sqs", "queue_url": SQS_URL + ".fifo", "region": "eu-west-1"}
    response = await _put(client, admin, body)
    assert response.status_code == 200, response.text
    assert response.json()["fifo"] is True
    assert (await client.get(PATH, headers=admin)).json()["fifo"] is True


@pytest.mark.usefixtures("acme")
async def test_sqs_secret_is_write_only(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    body = {
        "kind": "sqs",
        "queue_url": SQS_URL,
        "region": "eu-west-1",
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": AWS_SECRET,
    }
    response = await _put(client, admin, body)
    assert response.status_code == 200, response.text
    assert AWS_SECRET not in response.text
    assert response.json()["secret_set"] is True
    assert response.json()["config"]["access_key_id"] == "AKIAIOSFODNN7EXAMPLE"
    assert "secret_access_key" not in response.json()["config"]

    response = await client.get(PATH, headers=admin)
    assert response.status_code == 200
    assert AWS_SECRET not in response.text
    assert response.json()["secret_set"] is True

    stored = await _stored(context)
    assert stored.secret is not None
    assert AWS_SECRET not in stored.secret
    assert AWS_SECRET not in str(stored.config)
    assert integration_secrets(stored, context.cipher) == {"secret_access_key": AWS_SECRET}

    assert AWS_SECRET not in await _audit_text(client, admin)


@pytest.mark.usefixtures("acme")
async def test_sqs_compatible_endpoint(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {
        "kind": "sqs",
        "queue_url": "http://127.0.0.1:5000/123456789012/q",
        "region": "us-east-1",
        "endpoint_url": "http://127.0.0.1:5000",
        "access_key_id": "testing",
        "secret_access_key": "testing-secret",
    }
    response = await _put(client, admin, body)
    assert response.status_code == 200, response.text
    assert response.json()["config"]["endpoint_url"] == "http://127.0.0.1:5000"
    assert "testing-secret" not in response.text


INVALID_SQS: dict[str, dict[str, Any]] = {
    "region-mismatch": {"region": "us-east-1"},
    "bad-region": {"region": "europe"},
    "upper-region": {"region": "EU-WEST-1"},
    "no-path": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/"},
    "no-account": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/invitations"},
    "short-account": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/123/invitations"},
    "too-deep": {"queue_url": SQS_URL + "/extra"},
    "bad-name": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/a%20b"},
    "scheme": {"queue_url": "sqs://eu-west-1/123456789012/q"},
    "credentials-in-url": {"queue_url": "https://u:p@sqs.eu-west-1.amazonaws.com/123456789012/q"},
    "http-without-endpoint": {"queue_url": "http://localhost:9324/123456789012/q"},
    "endpoint-scheme": {"endpoint_url": "ftp://example.com"},
    "key-without-secret": {"access_key_id": "AKIAIOSFODNN7EXAMPLE"},
    "secret-without-key": {"secret_access_key": AWS_SECRET},
    "unknown-field": {"queue_name": "q"},
}


@pytest.mark.usefixtures("acme")
async def test_sqs_invalid(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for case, changes in INVALID_SQS.items():
        body = {"kind": "sqs", "queue_url": SQS_URL, "region": "eu-west-1", **changes}
        response = await _put(client, admin, body)
        assert response.status_code == 422, f"{case}: {response.text}"
        problem = response.json()
        assert problem["type"] == "urn:dispatch-engine:problem:validation-error"
        assert problem["errors"], case
        assert AWS_SECRET not in response.text, case
    assert (await client.get(PATH, headers=admin)).status_code == 404


@pytest.mark.usefixtures("acme")
async def test_azure_connection_string_is_write_only(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    body = {"kind": "azure_service_bus", "connection_string": SB_CONNECTION, "queue_name": "inv"}
    response = await _put(client, admin, body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["kind"] == "azure_service_bus"
    assert out["secret_set"] is True
    assert out["config"] == {"queue_name": "inv"}
    assert SB_KEY not in response.text
    assert "SharedAccessKey=" not in response.text

    response = await client.get(PATH, headers=admin)
    assert SB_KEY not in response.text
    assert response.json()["secret_set"] is True

    stored = await _stored(context)
    assert stored.secret is not None
    assert SB_KEY not in stored.secret
    assert "servicebus" not in stored.secret
    assert integration_secrets(stored, context.cipher) == {"connection_string": SB_CONNECTION}

    assert SB_KEY not in await _audit_text(client, admin)


@pytest.mark.usefixtures("acme")
async def test_azure_namespace_and_topic(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {
        "kind": "azure_service_bus",
        "namespace": "ns-name.servicebus.windows.net",
        "topic_name": "invitations",
    }
    response = await _put(client, admin, body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["secret_set"] is False
    assert out["config"] == {
        "namespace": "ns-name.servicebus.windows.net",
        "topic_name": "invitations",
    }


INVALID_AZURE: dict[str, dict[str, Any]] = {
    "malformed": {"connection_string": f"Endpoint=https://x/;SharedAccessKey={SB_KEY}"},
    "no-endpoint": {"connection_string": f"sb://ns/;Key={SB_KEY}"},
    "no-key-name": {
        "connection_string": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey={SB_KEY}"
    },
    "queue-and-topic": {"connection_string": SB_CONNECTION, "topic_name": "t"},
    "connection-string-and-namespace": {
        "connection_string": SB_CONNECTION,
        "namespace": "ns-name.servicebus.windows.net",
    },
    "neither": {},
    "bad-namespace": {"namespace": "not a namespace"},
    "bad-queue-name": {"connection_string": SB_CONNECTION, "queue_name": "in valid"},
    "unknown-field": {"connection_string": SB_CONNECTION, "region": "eu-west-1"},
}


@pytest.mark.usefixtures("acme")
async def test_azure_invalid_never_echoes_the_secret(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for case, body in INVALID_AZURE.items():
        request = {"kind": "azure_service_bus", "queue_name": "inv", **body}
        response = await _put(client, admin, request)
        assert response.status_code == 422, f"{case}: {response.text}"
        assert response.headers["content-type"] == "application/problem+json"
        assert SB_KEY not in response.text, case
    assert (await client.get(PATH, headers=admin)).status_code == 404


@pytest.mark.usefixtures("acme")
async def test_azure_malformed_connection_string_names_the_field(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    secret = "Endpoint=https://ns-name.servicebus.windows.net/;SharedAccessKey=" + SB_KEY
    body = {"kind": "azure_service_bus", "connection_string": secret, "queue_name": "inv"}
    response = await _put(client, admin, body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["field"].endswith("connection_string")
    assert problem["reason"].startswith("must look like Endpoint=sb://")
    assert secret not in response.text
    assert SB_KEY not in response.text


@pytest.mark.usefixtures("acme")
async def test_azure_missing_entity(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {"kind": "azure_service_bus", "connection_string": SB_CONNECTION}
    response = await _put(client, admin, body)
    assert response.status_code == 422
    assert SB_KEY not in response.text


@pytest.mark.usefixtures("acme")
async def test_unknown_kind(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await _put(client, admin, {"kind": "kafka"})
    assert response.status_code == 422
    response = await _put(client, admin, {"kind": "local", "queue_url": SQS_URL})
    assert response.status_code == 422


@pytest.mark.usefixtures("acme")
async def test_replace_bumps_version_and_drops_old_secret(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str], clock: FrozenClock
) -> None:
    body = {"kind": "azure_service_bus", "connection_string": SB_CONNECTION, "queue_name": "inv"}
    first = (await _put(client, admin, body)).json()
    assert first["version"] == 1
    clock.advance(timedelta(minutes=1))

    response = await _put(
        client, admin, {"kind": "sqs", "queue_url": SQS_URL, "region": "eu-west-1"}
    )
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["version"] == 2
    assert second["kind"] == "sqs"
    assert second["secret_set"] is False
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    assert (await _stored(context)).secret is None

    clock.advance(timedelta(minutes=1))
    response = await _put(client, admin, {"kind": "local"})
    assert response.json()["version"] == 3

    audit = (
        await client.get(
            "/v1/admin/audit",
            headers=admin,
            params={"target_type": "queue_integration", "target_id": "acme"},
        )
    ).json()["items"]
    assert [a["action"] for a in audit] == ["queue_integration.put"] * 3
    assert [(a["before"] or {}).get("version") for a in audit] == [2, 1, None]
    assert [a["after"]["version"] for a in audit] == [3, 2, 1]
    assert SB_KEY not in str(audit)


@pytest.mark.usefixtures("acme")
async def test_verify_sends_a_probe_the_vendor_can_ignore(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await _put(client, admin, {"kind": "local"})
    response = await client.post(f"{PATH}/verify", headers=admin)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True and result["error"] is None and result["verified_at"]
    assert (await client.get(PATH, headers=admin)).json()["verified_at"] == result["verified_at"]
    queued = (await client.get("/v1/accounts/acme/queue/messages", headers=admin)).json()
    assert [m["body"]["type"] for m in queued] == ["probe"]
    assert queued[0]["message_id"] == result["message_id"]


@pytest.mark.usefixtures("acme")
async def test_verify_reports_the_queue_error_in_plain_words(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port here
    await _put(
        client,
        admin,
        {
            "kind": "sqs",
            "queue_url": f"{closed}/123456789012/q",
            "region": "us-east-1",
            "endpoint_url": closed,
            "access_key_id": "x",
            "secret_access_key": "not-logged",
        },
    )
    response = await client.post(f"{PATH}/verify", headers=admin)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is False
    assert "unreachable" in result["error"]
    assert "not-logged" not in response.text
    stored = (await client.get(PATH, headers=admin)).json()
    assert stored["verified_at"] is None and stored["verify_error"] == result["error"]


@pytest.mark.usefixtures("acme")
async def test_integration_is_per_account(
    client: httpx.AsyncClient, context: AppContext, admin: dict[str, str]
) -> None:
    await setup_account(client, admin, "beta", queue=False)
    beta = bearer(await new_key(context, "backend", "beta"))
    response = await _put(client, beta, {"kind": "local"})
    assert response.status_code == 404
    assert (await client.get(PATH, headers=beta)).status_code == 404
    response = await client.put(
        "/v1/accounts/beta/queue-integration", headers=beta, json={"kind": "local"}
    )
    assert response.status_code == 200
    assert (await client.get(PATH, headers=admin)).status_code == 404


@pytest.mark.usefixtures("acme")
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"queue_url": "https://us-east-1.queue.amazonaws.com/123456789012/q"}),
        pytest.param({"queue_url": "https://queue.amazonaws.com/123456789012/q"}),
    ],
)
async def test_sqs_region_mismatch_in_legacy_url(
    client: httpx.AsyncClient, admin: dict[str, str], changes: dict[str, Any]
) -> None:
    body = {"kind": "sqs", "queue_url": SQS_URL, "region": "eu-west-1", **changes}
    response = await _put(client, admin, body)
    assert response.status_code == 422, response.text


async def test_racing_first_puts_all_succeed(
    lenient_client: httpx.AsyncClient,
    admin: dict[str, str],
    db_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    for trial in range(3):
        account = f"race{trial}"
        await setup_account(lenient_client, admin, account, queue=False)
        responses = await asyncio.gather(
            *(
                lenient_client.put(
                    f"/v1/accounts/{account}/queue-integration",
                    headers=admin,
                    json={"kind": "local"},
                )
                for _ in range(5)
            )
        )
        assert sorted(r.status_code for r in responses) == [200] * 5
        current = await lenient_client.get(
            f"/v1/accounts/{account}/queue-integration", headers=admin
        )
        assert current.json()["version"] == 5


@pytest.mark.usefixtures("acme")
async def test_local_queue_endpoints_refuse_accounts_that_do_not_use_it(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    messages, ack = "/v1/accounts/{}/queue/messages", "/v1/accounts/{}/queue/ack"
    receipts = {"receipts": ["r-1"]}

    async def problems(account: str) -> list[tuple[int, str]]:
        pulled = await client.get(messages.format(account), headers=admin)
        acked = await client.post(ack.format(account), headers=admin, json=receipts)
        return [(r.status_code, r.json()["type"].rsplit(":", 1)[-1]) for r in (pulled, acked)]

    assert await problems("nope") == [(404, "not-found")] * 2
    assert await problems("acme") == [(409, "not-local-queue")] * 2  # no integration yet
    await _put(
        client,
        admin,
        {"kind": "sqs", "queue_url": SQS_URL, "region": "eu-west-1"},
    )
    assert await problems("acme") == [(409, "not-local-queue")] * 2
    response = await client.get(messages.format("acme"), headers=admin)
    assert "'sqs' queue" in response.json()["detail"]
    await _put(client, admin, {"kind": "local"})
    assert (await client.get(messages.format("acme"), headers=admin)).json() == []
    acked = await client.post(ack.format("acme"), headers=admin, json=receipts)
    assert acked.json() == {"acked": 0, "unknown": ["r-1"]}
