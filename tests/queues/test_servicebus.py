"""The Azure Service Bus sender, tested at the SDK boundary.

The fake client/sender stand in for the network only: batches are the SDK's own
``ServiceBusMessageBatch`` (its own size accounting and ``MessageSizeExceededError``), and
errors are made by the SDK's own AMQP-error translation, as a real send would raise them.
An integration test against a real namespace runs when DISPATCH_TEST_SERVICEBUS is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus._common.constants import (
    ERROR_CODE_ARGUMENT_ERROR,
    ERROR_CODE_AUTH_FAILED,
    ERROR_CODE_ENTITY_DISABLED,
    ERROR_CODE_SERVER_BUSY,
    ERROR_CODE_TIMEOUT,
)
from azure.servicebus._pyamqp.error import (
    AMQPConnectionError,
    AMQPException,
    AMQPLinkError,
    AuthenticationException,
    ErrorCondition,
    MessageException,
)
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    MessagingEntityDisabledError,
    MessagingEntityNotFoundError,
    OperationTimeoutError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
    ServiceBusCommunicationError,
    ServiceBusConnectionError,
    ServiceBusError,
    ServiceBusQuotaExceededError,
    ServiceBusServerBusyError,
)
from jsonschema import Draft202012Validator

from dispatch_engine.queues.base import OutgoingMessage, QueueSender
from dispatch_engine.queues.servicebus import (
    ServiceBusConfigError,
    ServiceBusQueueSender,
    ServiceBusSendError,
)
from dispatch_engine.schemas.queue_message import (
    SCHEMA_NAME,
    build_invitation,
    build_probe,
    encode_message,
    load_json_schema,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET_KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
CONNECTION_STRING = (
    "Endpoint=sb://acme-ns.servicebus.windows.net/;"
    f"SharedAccessKeyName=send-only;SharedAccessKey={SECRET_KEY}"
)
FORBIDDEN_IN_ERRORS = (
    SECRET_KEY,
    "SharedAccessKey",
    "acme-ns",
    "servicebus.windows.net",
    "sb://",
    "alice",
    "example.com",
)
_LOG = logging.getLogger("tests.servicebus")


# -- the SDK boundary ----------------------------------------------------------------------


def sdk_error(amqp: AMQPException) -> ServiceBusError:
    """The exception a real send raises for this AMQP failure (the SDK's own translation)."""
    return PyamqpTransport.create_servicebus_exception(_LOG, amqp)


class FakeSender:
    """Stands in for ``azure.servicebus.aio.ServiceBusSender`` without a network."""

    def __init__(self, client: FakeClient, entity: str, max_batch_bytes: int) -> None:
        self.client = client
        self.entity = entity
        self.max_batch_bytes = max_batch_bytes
        self.sent: list[list[ServiceBusMessage]] = []  # batches the broker accepted
        self.attempts: list[list[str]] = []  # message ids of every send call
        self.send_errors: dict[int, BaseException] = {}  # 1-based send call → error to raise
        self.batch_errors: dict[int, Exception] = {}  # 1-based create_message_batch call
        self.batch_calls = 0
        self.close_calls = 0
        self.in_flight = False
        self._shutdown = False

    def _check_live(self) -> None:  # as the SDK: a closed handler cannot be used again
        if self._shutdown:
            raise ValueError(
                "The handler has already been shutdown. Please use ServiceBusClient to "
                "create a new instance."
            )

    async def create_message_batch(
        self, max_size_in_bytes: int | None = None
    ) -> ServiceBusMessageBatch:
        self._check_live()
        self.batch_calls += 1
        await asyncio.sleep(0)
        error = self.batch_errors.get(self.batch_calls)
        if error is not None:
            raise error
        return ServiceBusMessageBatch(max_size_in_bytes=max_size_in_bytes or self.max_batch_bytes)

    async def send_messages(self, message: Any, **kwargs: Any) -> None:
        self._check_live()
        assert not self.in_flight, "the sender was used by two coroutines at once"
        self.in_flight = True
        try:
            await asyncio.sleep(0)
            if isinstance(message, ServiceBusMessageBatch):
                messages = list(message._messages)
            elif isinstance(message, ServiceBusMessage):
                messages = [message]
            else:
                messages = list(message)
            self.attempts.append([str(m.message_id) for m in messages])
            error = self.send_errors.get(len(self.attempts))
            if error is not None:
                raise error
            self.sent.append(messages)
        finally:
            self.in_flight = False

    async def close(self) -> None:
        self.close_calls += 1
        self._shutdown = True

    @property
    def delivered(self) -> list[ServiceBusMessage]:
        return [m for batch in self.sent for m in batch]

    @property
    def delivered_ids(self) -> list[str]:
        return [str(m.message_id) for m in self.delivered]


class FakeClient:
    """Stands in for ``azure.servicebus.aio.ServiceBusClient``."""

    def __init__(self, max_batch_bytes: int = 262_144) -> None:
        self.max_batch_bytes = max_batch_bytes
        self.senders: list[FakeSender] = []
        self.sender_requests: list[tuple[str, str]] = []
        self.prepared: FakeSender | None = None
        self.close_calls = 0

    def get_queue_sender(self, queue_name: str, **kwargs: Any) -> FakeSender:
        self.sender_requests.append(("queue", queue_name))
        return self._new_sender(queue_name)

    def get_topic_sender(self, topic_name: str, **kwargs: Any) -> FakeSender:
        self.sender_requests.append(("topic", topic_name))
        return self._new_sender(topic_name)

    def prepare(self, entity: str) -> FakeSender:
        """The sender the next get_*_sender call hands out (to arm errors before use)."""
        self.prepared = FakeSender(self, entity, self.max_batch_bytes)
        return self.prepared

    def _new_sender(self, entity: str) -> FakeSender:
        sender = self.prepared or FakeSender(self, entity, self.max_batch_bytes)
        assert sender.entity == entity
        self.prepared = None
        self.senders.append(sender)
        return sender

    async def close(self) -> None:
        self.close_calls += 1
        for sender in self.senders:
            await sender.close()

    @property
    def sender(self) -> FakeSender:
        assert len(self.senders) == 1
        return self.senders[0]


class Factory:
    """A client_factory that counts how often a client was made."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.calls = 0

    def __call__(self) -> FakeClient:
        self.calls += 1
        return self.client


def make_sender(
    max_batch_bytes: int = 262_144, *, topic: bool = False
) -> tuple[ServiceBusQueueSender, FakeClient, Factory]:
    client = FakeClient(max_batch_bytes)
    factory = Factory(client)
    entity = {"topic_name": "invitations"} if topic else {"queue_name": "invitations"}
    sender = ServiceBusQueueSender(
        connection_string=CONNECTION_STRING, client_factory=factory, **entity
    )
    return sender, client, factory


def invitation(n: int, *, padding: int = 0) -> OutgoingMessage:
    message_id = f"msg_{n:04d}"
    body = encode_message(
        build_invitation(
            message_id=message_id,
            invite_id=f"inv_{n:04d}",
            token=f"tok_{n:04d}_abcdefghijkl",
            account="acme",
            dispatch="dsp_1",
            questionnaire="nps-2026",
            channel="email",
            address=f"alice{n}@example.com",
            message_template="tpl-welcome",
            lineup_position=1,
            lineup_message_id="step-1",
            scheduled_at=T0,
            sent_at=T0,
            attributes={"first_name": "Alice", "note": "n" * padding},
        )
    )
    return OutgoingMessage(message_id=message_id, group_id=f"inv_{n:04d}", body=body)


def about_1kb(count: int) -> list[OutgoingMessage]:
    messages = [invitation(n, padding=500) for n in range(count)]
    assert all(900 <= len(m.body) <= 1100 for m in messages)
    return messages


def body_of(message: ServiceBusMessage) -> bytes:
    return b"".join(message.body)


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(load_json_schema())


def assert_plain(text: str) -> None:
    for forbidden in FORBIDDEN_IN_ERRORS:
        assert forbidden not in text, f"{forbidden!r} leaked into {text!r}"


# -- what is sent --------------------------------------------------------------------------


def test_is_a_queue_sender() -> None:
    sender: QueueSender = make_sender()[0]
    assert "invitations" in repr(sender)
    assert SECRET_KEY not in repr(sender)


async def test_messages_carry_id_content_type_schema_and_exact_body(
    validator: Draft202012Validator,
) -> None:
    sender, client, _ = make_sender()
    messages = [invitation(n) for n in range(3)]

    assert await sender.send_batch(messages) == []

    fake = client.sender
    assert len(fake.sent) == 1  # small messages share one batch
    assert fake.delivered_ids == [m.message_id for m in messages]
    for original, sent in zip(messages, fake.delivered, strict=True):
        assert sent.message_id == original.message_id
        assert sent.content_type == "application/json"
        assert sent.application_properties == {"schema": SCHEMA_NAME}
        assert sent.session_id is None  # batches may mix invites (partitioned entities)
        assert body_of(sent) == original.body
        document = orjson.loads(body_of(sent))
        validator.validate(document)
        assert document["message_id"] == original.message_id


async def test_empty_call_touches_nothing() -> None:
    sender, client, factory = make_sender()
    assert await sender.send_batch([]) == []
    assert factory.calls == 0
    assert client.senders == []


async def test_full_batches_are_sent_and_a_new_one_started_order_kept() -> None:
    sender, client, _ = make_sender(max_batch_bytes=4096)
    messages = about_1kb(20)

    assert await sender.send_batch(messages) == []

    fake = client.sender
    assert len(fake.sent) >= 5  # ~1 KB each, 4 KB per batch
    assert all(1 <= len(batch) <= 4 for batch in fake.sent)
    assert fake.delivered_ids == [m.message_id for m in messages]
    assert [body_of(m) for m in fake.delivered] == [m.body for m in messages]
    assert fake.batch_calls == len(fake.sent)  # no empty batch created or sent


async def test_a_message_too_large_for_an_empty_batch_fails_alone_and_is_never_sent() -> None:
    sender, client, _ = make_sender(max_batch_bytes=4096)
    small = about_1kb(4)
    huge = invitation(99, padding=5000)
    messages = [small[0], small[1], huge, small[2], small[3]]

    failures = await sender.send_batch(messages)

    assert [(f.message_id, f.retryable) for f in failures] == [(huge.message_id, False)]
    assert failures[0].error == "message too large for the entity (max 4096 bytes)"
    assert not failures[0].about_queue  # the message's fault: nothing shown on the integration
    fake = client.sender
    assert fake.delivered_ids == [m.message_id for m in small]
    assert huge.message_id not in [i for attempt in fake.attempts for i in attempt]


async def test_a_lone_oversized_message() -> None:
    sender, client, _ = make_sender(max_batch_bytes=4096)
    huge = invitation(1, padding=5000)
    failures = await sender.send_batch([huge])
    assert [(f.message_id, f.retryable) for f in failures] == [(huge.message_id, False)]
    assert client.sender.attempts == []


# -- failures --------------------------------------------------------------------------------


def armed(max_batch_bytes: int = 4096) -> tuple[ServiceBusQueueSender, FakeClient, FakeSender]:
    """A sender plus the fake SDK sender it will get, so a test can arm errors beforehand."""
    sender, client, _ = make_sender(max_batch_bytes)
    return sender, client, client.prepare("invitations")


TRANSIENT: list[tuple[str, Callable[[], ServiceBusError], type[ServiceBusError], str]] = [
    (
        "connection",
        lambda: sdk_error(AMQPConnectionError(ErrorCondition.SocketError, description="reset")),
        ServiceBusConnectionError,
        "connection to Service Bus failed",
    ),
    (
        "detach-forced",
        lambda: sdk_error(AMQPLinkError(ErrorCondition.LinkDetachForced, description="idle")),
        ServiceBusConnectionError,
        "connection to Service Bus failed",
    ),
    (
        "server-busy",
        lambda: sdk_error(AMQPLinkError(ERROR_CODE_SERVER_BUSY, description="busy")),
        ServiceBusServerBusyError,
        "Service Bus is busy",
    ),
    (
        "timeout",
        lambda: sdk_error(AMQPLinkError(ERROR_CODE_TIMEOUT, description="timeout")),
        OperationTimeoutError,
        "timed out",
    ),
    (
        "send-timed-out",
        lambda: sdk_error(
            MessageException(ErrorCondition.ClientError, description="Send operation timed out")
        ),
        OperationTimeoutError,
        "timed out",
    ),
    (
        "communication",
        lambda: sdk_error(
            AMQPConnectionError(
                ErrorCondition.NotFound,
                description="Failed to resolve acme-ns.servicebus.windows.net",
            )
        ),
        ServiceBusCommunicationError,
        "could not reach Service Bus",
    ),
    (
        "quota",
        lambda: sdk_error(
            AMQPLinkError(ErrorCondition.ResourceLimitExceeded, description="entity full")
        ),
        ServiceBusQuotaExceededError,
        "full",
    ),
]


@pytest.mark.parametrize(
    ("make_error", "error_class", "words"),
    [case[1:] for case in TRANSIENT],
    ids=[case[0] for case in TRANSIENT],
)
async def test_transient_errors_fail_exactly_the_failed_batch_as_retryable(
    make_error: Callable[[], ServiceBusError], error_class: type[ServiceBusError], words: str
) -> None:
    error = make_error()
    assert type(error) is error_class
    sender, client, fake = armed()
    messages = about_1kb(12)
    fake.send_errors[2] = error

    failures = await sender.send_batch(messages)

    failed_batch = fake.attempts[1]
    assert [f.message_id for f in failures] == failed_batch
    assert all(f.retryable for f in failures)
    assert all(f.about_queue for f in failures)  # an outage: shown on the integration
    assert all(words in f.error for f in failures)
    for failure in failures:
        assert_plain(failure.error)
    assert len(fake.attempts) > 2  # later batches were still tried
    delivered = fake.delivered_ids
    assert set(delivered) | set(failed_batch) == {m.message_id for m in messages}
    assert not set(delivered) & set(failed_batch)
    assert delivered == [m.message_id for m in messages if m.message_id not in failed_batch]


REFUSALS: list[tuple[str, Callable[[], ServiceBusError], type[ServiceBusError], str]] = [
    (
        "authentication",
        lambda: sdk_error(
            AuthenticationException(
                ErrorCondition.ClientError,
                description=f"Put token failed. status-code: 401, {CONNECTION_STRING}",
            )
        ),
        ServiceBusAuthenticationError,
        "authentication failed",
    ),
    (
        "unauthorized",
        lambda: sdk_error(
            AMQPLinkError(
                ErrorCondition.UnauthorizedAccess,
                description="Unauthorized access. 'Send' claim(s) are required to perform this "
                "operation. Resource: 'sb://acme-ns.servicebus.windows.net/invitations'.",
            )
        ),
        ServiceBusAuthorizationError,
        "not authorized to send",
    ),
    (
        "auth-failed",
        lambda: sdk_error(AMQPLinkError(ERROR_CODE_AUTH_FAILED, description="sb://acme-ns")),
        ServiceBusAuthorizationError,
        "not authorized to send",
    ),
    (
        "not-found",
        lambda: sdk_error(
            AMQPLinkError(
                ErrorCondition.NotFound,
                description="The messaging entity 'sb://acme-ns.servicebus.windows.net/"
                "invitations' could not be found.",
            )
        ),
        MessagingEntityNotFoundError,
        "queue or topic not found",
    ),
    (
        "disabled",
        lambda: sdk_error(AMQPLinkError(ERROR_CODE_ENTITY_DISABLED, description="acme-ns")),
        MessagingEntityDisabledError,
        "queue or topic is disabled",
    ),
]


@pytest.mark.parametrize(
    ("make_error", "error_class", "words"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
async def test_refusals_are_final_in_plain_words_without_secrets(
    make_error: Callable[[], ServiceBusError], error_class: type[ServiceBusError], words: str
) -> None:
    error = make_error()
    assert type(error) is error_class
    sender, client, fake = armed()
    messages = about_1kb(12)
    fake.send_errors[2] = error

    failures = await sender.send_batch(messages)

    sent = fake.attempts[0]
    assert fake.delivered_ids == sent  # the first batch went through and is not reported
    assert [f.message_id for f in failures] == [
        m.message_id for m in messages if m.message_id not in sent
    ]
    assert len(fake.attempts) == 2  # every later batch would be refused the same way
    assert all(not f.retryable for f in failures)
    assert all(f.about_queue for f in failures)  # shown on the integration
    assert {f.error for f in failures} == {failures[0].error}
    assert words in failures[0].error
    assert_plain(failures[0].error)


async def test_refusal_when_opening_the_link_fails_every_message() -> None:
    sender, client, fake = armed()
    fake.batch_errors[1] = sdk_error(
        AMQPLinkError(ErrorCondition.UnauthorizedAccess, description=CONNECTION_STRING)
    )
    messages = about_1kb(5)

    failures = await sender.send_batch(messages)

    assert [f.message_id for f in failures] == [m.message_id for m in messages]
    assert all(not f.retryable and "not authorized" in f.error for f in failures)
    assert fake.attempts == []
    assert_plain(failures[0].error)


async def test_transient_failure_creating_a_later_batch_fails_the_rest_retryably() -> None:
    sender, client, fake = armed()
    fake.batch_errors[2] = sdk_error(AMQPLinkError(ERROR_CODE_SERVER_BUSY, description="busy"))
    messages = about_1kb(10)

    failures = await sender.send_batch(messages)

    sent = fake.delivered_ids
    assert sent == fake.attempts[0]
    assert [f.message_id for f in failures] == [
        m.message_id for m in messages if m.message_id not in sent
    ]
    assert all(f.retryable for f in failures)


async def test_other_sdk_errors_follow_the_sdk_retry_verdict() -> None:
    sender, client, fake = armed()
    fake.send_errors[1] = sdk_error(AMQPLinkError(ErrorCondition.NotAllowed, description="x"))
    fake.send_errors[2] = sdk_error(
        AMQPLinkError(ERROR_CODE_ARGUMENT_ERROR, description="sb://acme-ns bad argument")
    )
    fake.send_errors[3] = sdk_error(
        AMQPLinkError(ErrorCondition.InternalError, description="sb://acme-ns oops")
    )

    failures = await sender.send_batch(about_1kb(9))

    by_batch = [
        {(f.error, f.retryable) for f in failures if f.message_id in attempt}
        for attempt in fake.attempts
    ]
    assert by_batch == [
        {("Service Bus refused the send (amqp:not-allowed)", False)},
        {("Service Bus refused the send (com.microsoft:argument-error)", False)},
        {("Service Bus refused the send (amqp:internal-error)", True)},
    ]


async def test_message_size_refused_by_the_service_is_final() -> None:
    sender, client, fake = armed()
    fake.send_errors[1] = sdk_error(
        AMQPLinkError(ErrorCondition.LinkMessageSizeExceeded, description="too big")
    )
    assert isinstance(sdk_error(AMQPLinkError(ErrorCondition.LinkMessageSizeExceeded)), ValueError)
    failures = await sender.send_batch(about_1kb(2))
    assert {(f.error, f.retryable) for f in failures} == {
        ("message too large for the entity", False)
    }


async def test_an_unexpected_exception_is_retryable_and_names_only_its_type() -> None:
    sender, client, fake = armed()
    fake.send_errors[1] = RuntimeError(f"boom {CONNECTION_STRING}")
    failures = await sender.send_batch(about_1kb(2))
    assert {(f.error, f.retryable) for f in failures} == {
        ("unexpected error while sending to Service Bus (RuntimeError)", True)
    }


async def test_cancellation_is_not_swallowed() -> None:
    sender, client, fake = armed()
    fake.send_errors[1] = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await sender.send_batch(about_1kb(1))


# -- lifecycle -------------------------------------------------------------------------------


async def test_one_client_and_one_sender_reused_then_closed_once() -> None:
    sender, client, factory = make_sender()

    assert await sender.send_batch([invitation(1)]) == []
    assert await sender.send_batch([invitation(2)]) == []
    await sender.probe(b"{}", "probe-1")

    assert factory.calls == 1
    assert client.sender_requests == [("queue", "invitations")]
    fake = client.sender
    assert fake.delivered_ids == ["msg_0001", "msg_0002", "probe-1"]

    await sender.aclose()
    await sender.aclose()  # idempotent
    assert fake.close_calls == 1 + 1  # once by us, once by client.close() closing its handlers
    assert client.close_calls == 1

    after = await sender.send_batch([invitation(3)])
    assert [(f.message_id, f.retryable) for f in after] == [("msg_0003", True)]
    assert factory.calls == 1  # nothing re-opened after close


async def test_aclose_before_any_send_is_a_no_op() -> None:
    sender, client, factory = make_sender()
    await sender.aclose()
    assert factory.calls == 0


async def test_a_failing_send_keeps_the_same_client_and_sender() -> None:
    sender, client, factory = make_sender()
    assert await sender.send_batch([invitation(1)]) == []
    client.sender.send_errors[2] = sdk_error(
        AMQPConnectionError(ErrorCondition.SocketError, description="reset")
    )
    assert len(await sender.send_batch([invitation(2)])) == 1
    assert await sender.send_batch([invitation(2)]) == []
    assert factory.calls == 1
    assert len(client.senders) == 1


async def test_concurrent_calls_do_not_share_the_sdk_sender_at_once() -> None:
    sender, client, factory = make_sender(max_batch_bytes=4096)
    groups = [about_1kb(6)[i::3] for i in range(3)]
    results = await asyncio.gather(*(sender.send_batch(g) for g in groups))
    assert results == [[], [], []]
    assert factory.calls == 1
    assert sorted(client.sender.delivered_ids) == sorted(m.message_id for m in about_1kb(6))


@pytest.mark.parametrize(
    ("topic", "expected"),
    [(False, ("queue", "invitations")), (True, ("topic", "invitations"))],
    ids=["queue", "topic"],
)
async def test_queue_or_topic_selects_the_sender_kind(
    topic: bool, expected: tuple[str, str]
) -> None:
    sender, client, _ = make_sender(topic=topic)
    assert await sender.send_batch([invitation(1)]) == []
    assert client.sender_requests == [expected]


# -- probe and configuration --------------------------------------------------------------


async def test_probe_sends_one_probe_message(validator: Draft202012Validator) -> None:
    sender, client, _ = make_sender()
    body = encode_message(build_probe(message_id="probe_01", account="acme", sent_at=T0))

    await sender.probe(body, "probe_01")

    (sent,) = client.sender.delivered
    assert sent.message_id == "probe_01"
    assert body_of(sent) == body
    document = orjson.loads(body_of(sent))
    validator.validate(document)
    assert document["type"] == "probe"


async def test_probe_failure_raises_in_plain_words() -> None:
    sender, client, fake = armed()
    fake.send_errors[1] = sdk_error(
        AuthenticationException(ErrorCondition.ClientError, description=CONNECTION_STRING)
    )
    with pytest.raises(ServiceBusSendError) as caught:
        await sender.probe(b'{"type":"probe"}', "probe_01")
    assert caught.value.reason.startswith("authentication failed")
    assert caught.value.retryable is False
    assert_plain(str(caught.value))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connection_string": CONNECTION_STRING},
        {"connection_string": CONNECTION_STRING, "queue_name": "q", "topic_name": "t"},
        {"queue_name": "q"},
        {"connection_string": CONNECTION_STRING, "namespace": "n.servicebus.windows.net"},
    ],
)
def test_constructor_refuses_incomplete_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ServiceBusConfigError) as caught:
        ServiceBusQueueSender(**kwargs)
    assert_plain(str(caught.value))


async def test_namespace_auth_without_azure_identity_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)
    sender = ServiceBusQueueSender(namespace="acme-ns.servicebus.windows.net", queue_name="q")

    failures = await sender.send_batch([invitation(1)])

    assert [(f.error, f.retryable) for f in failures] == [
        ("namespace authentication needs the azure-identity package", False)
    ]
    with pytest.raises(ServiceBusSendError, match="needs the azure-identity package"):
        await sender.probe(b"{}", "probe_01")
    await sender.aclose()


async def test_a_malformed_connection_string_is_reported_without_its_text() -> None:
    sender = ServiceBusQueueSender(
        connection_string=f"Endpoint=https://nowhere;SharedAccessKey={SECRET_KEY}",
        queue_name="q",
    )
    failures = await sender.send_batch([invitation(1)])
    assert [(f.error, f.retryable) for f in failures] == [
        ("the connection string is malformed", False)
    ]
    await sender.aclose()


def test_from_integration_reads_config_and_secrets() -> None:
    sender = ServiceBusQueueSender.from_integration(
        {"topic_name": "invitations"}, {"connection_string": CONNECTION_STRING}
    )
    assert sender.entity_kind == "topic"
    with pytest.raises(ServiceBusConfigError):
        ServiceBusQueueSender.from_integration({"queue_name": "q"}, {})


def test_the_real_batch_raises_the_real_size_error() -> None:
    """The fake relies on the SDK batch; keep that assumption checked."""
    batch = ServiceBusMessageBatch(max_size_in_bytes=1024)
    with pytest.raises(MessageSizeExceededError):
        batch.add_message(ServiceBusMessage(b"x" * 2048))


# -- against a real namespace ----------------------------------------------------------------

REAL_CONNECTION = os.environ.get("DISPATCH_TEST_SERVICEBUS", "")
REAL_QUEUE = os.environ.get("DISPATCH_TEST_SERVICEBUS_QUEUE", "")


@pytest.mark.skipif(
    not (REAL_CONNECTION and REAL_QUEUE),
    reason="set DISPATCH_TEST_SERVICEBUS (connection string) and "
    "DISPATCH_TEST_SERVICEBUS_QUEUE (queue name) to run against Azure Service Bus",
)
async def test_round_trip_through_a_real_queue(validator: Draft202012Validator) -> None:
    from azure.servicebus.aio import ServiceBusClient

    run = uuid.uuid4().hex[:12]
    messages = []
    for n in range(3):
        base = invitation(n)
        document = orjson.loads(base.body)
        document["message_id"] = f"it_{run}_{n}"
        body = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        messages.append(OutgoingMessage(f"it_{run}_{n}", base.group_id, body))

    sender = ServiceBusQueueSender(connection_string=REAL_CONNECTION, queue_name=REAL_QUEUE)
    try:
        assert await sender.send_batch(messages) == []
    finally:
        await sender.aclose()

    wanted = {m.message_id: m for m in messages}
    received: dict[str, Any] = {}
    client = ServiceBusClient.from_connection_string(REAL_CONNECTION)
    async with client, client.get_queue_receiver(REAL_QUEUE, max_wait_time=5) as receiver:
        deadline = time.monotonic() + 60
        while len(received) < len(wanted) and time.monotonic() < deadline:
            batch = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
            for message in batch:
                if message.message_id in wanted:
                    received[str(message.message_id)] = message
                    await receiver.complete_message(message)
                else:  # not ours: leave it for whoever it belongs to
                    await receiver.abandon_message(message)

    assert set(received) == set(wanted)
    for message_id, message in received.items():
        body = b"".join(message.body)
        assert body == wanted[message_id].body
        assert message.content_type == "application/json"
        properties = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (message.application_properties or {}).items()
        }
        assert properties["schema"] == SCHEMA_NAME
        validator.validate(orjson.loads(body))


@pytest.mark.parametrize("entity", ["queue_name", "topic_name"])
async def test_the_real_sdk_accepts_how_the_client_and_sender_are_made(entity: str) -> None:
    """No network: building the aio client and sender does not connect yet."""
    from azure.servicebus.aio import ServiceBusSender

    where: dict[str, Any] = {entity: "invitations"}
    sender = ServiceBusQueueSender(connection_string=CONNECTION_STRING, **where)
    sdk_sender = sender._get_sender()
    assert isinstance(sdk_sender, ServiceBusSender)
    assert sdk_sender.entity_name == "invitations"
    assert sdk_sender.fully_qualified_namespace == "acme-ns.servicebus.windows.net"
    assert sender._get_sender() is sdk_sender
    await sender.aclose()
    await sender.aclose()
