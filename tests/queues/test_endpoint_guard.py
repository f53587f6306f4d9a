"""The senders' SSRF guard at call time: every connection goes to a vetted address.

SQS: the endpoint is vetted before the client exists, and aiobotocore's connections resolve
through the vetting resolver, so a name that rebinds after that check is refused too.
Service Bus: the namespace host is vetted before each push.
"""

from __future__ import annotations

import pytest
from azure.servicebus._base_handler import _parse_conn_str

from dispatch_engine.queues.servicebus import ServiceBusQueueSender
from dispatch_engine.queues.sqs import SqsQueueSender
from dispatch_engine.security.queue_endpoints import servicebus_endpoint
from dispatch_engine.security.ssrf import UrlPolicy
from tests.net import CountingServer, fake_dns
from tests.queues.conftest import KEY, REGION, SECRET, Moto
from tests.queues.test_servicebus import SECRET_KEY, Factory, FakeClient, invitation

LOOPBACK_ONE = UrlPolicy(allow_http=True, allowlist=("127.0.0.1/32",))


def sqs_sender(endpoint: str, queue_url: str, policy: UrlPolicy | None) -> SqsQueueSender:
    return SqsQueueSender(
        queue_url=queue_url,
        region=REGION,
        fifo=False,
        endpoint_url=endpoint,
        access_key_id=KEY,
        secret_access_key=SECRET,
        url_policy=policy,
    )


async def test_sqs_connections_resolve_through_the_vetting_resolver(
    moto_server: Moto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allowed name works as before, and the connection asked the vetting resolver (the
    check before the client, then the connection itself)."""
    port = moto_server.endpoint_url.rsplit(":", 1)[1]
    queue_url = await moto_server.create_queue("guard")
    asked = fake_dns(monkeypatch, {"sqs.rebind.test": lambda: "127.0.0.1"})
    sender = sqs_sender(f"http://sqs.rebind.test:{port}", queue_url, LOOPBACK_ONE)
    try:
        assert await sender.send_batch([invitation(1)]) == []
    finally:
        await sender.aclose()
    assert len(asked) >= 2


async def test_sqs_refuses_a_name_that_rebinds_after_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first answer (the check before the client) is allow-listed; the connection's own
    resolution answers another loopback address: refused, nothing connects."""
    async with CountingServer("127.0.0.2") as server:
        answers = iter(["127.0.0.1"])
        fake_dns(monkeypatch, {"sqs.rebind.test": lambda: next(answers, "127.0.0.2")})
        endpoint = f"http://sqs.rebind.test:{server.port}"
        sender = sqs_sender(endpoint, f"{endpoint}/123456789012/q", LOOPBACK_ONE)
        try:
            failures = await sender.send_batch([invitation(1)])
        finally:
            await sender.aclose()
        assert server.connections == 0
    [failure] = failures
    assert failure.error.startswith("endpoint_url refused: ")
    assert "127.0.0.2 is loopback" in failure.error
    assert failure.retryable is False and failure.about_queue is True


@pytest.mark.parametrize(
    "endpoint", ["http://169.254.169.254", "http://10.0.0.1:4566", "http://127.0.0.1:9"]
)
async def test_sqs_refuses_a_forbidden_literal_before_any_client(endpoint: str) -> None:
    sender = sqs_sender(endpoint, f"{endpoint}/123456789012/q", UrlPolicy(allow_http=True))
    try:
        failures = await sender.send_batch([invitation(1)])
    finally:
        await sender.aclose()
    assert [f.error.split(":")[0] for f in failures] == ["endpoint_url refused"]
    assert sender._client is None


def bus(host: str, policy: UrlPolicy | None) -> tuple[ServiceBusQueueSender, Factory]:
    factory = Factory(FakeClient())
    connection = f"Endpoint=sb://{host}/;SharedAccessKeyName=send;SharedAccessKey={SECRET_KEY}"
    sender = ServiceBusQueueSender(
        connection_string=connection, queue_name="q", client_factory=factory, url_policy=policy
    )
    return sender, factory


async def test_service_bus_vets_the_namespace_before_each_push(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = ["20.50.2.1"]  # public: allowed
    fake_dns(monkeypatch, {"acme.servicebus.rebind.test": lambda: answer[0]})
    sender, factory = bus("acme.servicebus.rebind.test", UrlPolicy())
    try:
        assert await sender.send_batch([invitation(1)]) == []
        answer[0] = "169.254.169.254"  # the name now points at the metadata service
        [failure] = await sender.send_batch([invitation(2)])
    finally:
        await sender.aclose()
    assert failure.error.startswith("namespace refused: ")
    assert "link-local" in failure.error and SECRET_KEY not in failure.error
    assert failure.retryable is False and failure.about_queue is True
    assert factory.client.sender.delivered_ids == [invitation(1).message_id]


async def test_service_bus_refuses_a_forbidden_literal_without_a_client() -> None:
    sender, factory = bus("10.0.0.7", UrlPolicy())
    try:
        [failure] = await sender.send_batch([invitation(1)])
    finally:
        await sender.aclose()
    assert "10.0.0.7 is private" in failure.error
    assert factory.calls == 0


@pytest.mark.parametrize(
    "connection",
    [
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b",
        "endpoint=sb://acme.servicebus.windows.net;SharedAccessKeyName=a;SharedAccessKey=b",
        "Endpoint=sb://a.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b;"
        "HostName=sb://169.254.169.254/",
        "ENDPOINT=sb://10.0.0.7:5671/;SharedAccessSignature=sig;UseDevelopmentEmulator=true",
        "Endpoint=sb://[::1]:5672/;SharedAccessKeyName=a;SharedAccessKey=b;",
    ],
)
def test_the_connection_string_is_read_as_the_sdk_reads_it(connection: str) -> None:
    host, *_rest, emulator = _parse_conn_str(connection)
    endpoint = servicebus_endpoint(connection)
    assert endpoint is not None
    assert (endpoint.netloc, endpoint.plaintext) == (host, emulator)
