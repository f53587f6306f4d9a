"""The SQS sender: against moto's SQS server, and against a scripted client for the answers
moto cannot be made to give (partial failures, throttling, lost acknowledgements)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from jsonschema import Draft202012Validator

from dispatch_engine.queues.base import OutgoingMessage, SendFailure
from dispatch_engine.queues.sqs import USER_AGENT, SqsError, SqsLimits, SqsQueueSender
from dispatch_engine.schemas.queue_message import (
    build_invitation,
    build_probe,
    encode_message,
    load_json_schema,
)
from tests.queues.conftest import KEY, REGION, SECRET, Moto, free_port

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def invitation(n: int, invite: str | None = None, position: int = 1) -> OutgoingMessage:
    message_id = f"m{n:05d}"
    invite_id = invite or f"inv{n:05d}"
    body = encode_message(
        build_invitation(
            message_id=message_id,
            invite_id=invite_id,
            token=f"tok{n}",
            account="acme",
            dispatch="dsp_1",
            questionnaire="q1",
            channel="email",
            address=f"person{n}@example.com",
            message_template="tpl-1",
            lineup_position=position,
            lineup_message_id=f"msg_{position}",
            scheduled_at=T0,
            sent_at=T0 + timedelta(seconds=n),
            attributes={"first_name": f"P{n}"},
        )
    )
    return OutgoingMessage(message_id, invite_id, body)


def sender_for(moto: Moto, queue_url: str, *, fifo: bool = False, **limits: Any) -> SqsQueueSender:
    return SqsQueueSender(
        queue_url=queue_url,
        region=REGION,
        fifo=fifo,
        endpoint_url=moto.endpoint_url,
        access_key_id=KEY,
        secret_access_key=SECRET,
        limits=SqsLimits(**limits),
    )


async def receive_all(moto: Moto, queue_url: str, expected: int) -> list[dict[str, Any]]:
    """Receive (and delete) until `expected` messages arrived, then check nothing more."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    async with moto.client() as sqs:
        while time.monotonic() < deadline:
            answer = await sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            batch = answer.get("Messages", [])
            if batch:
                received.extend(batch)
                await sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(batch)
                    ],
                )
            elif len(received) >= expected:
                break
            else:
                await asyncio.sleep(0.05)
    return received


@pytest.fixture
def validator() -> Draft202012Validator:
    return Draft202012Validator(
        load_json_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


# -- against moto ----------------------------------------------------------------------


async def test_standard_queue_delivers_every_message(
    moto_server: Moto, validator: Draft202012Validator
) -> None:
    queue_url = await moto_server.create_queue("std")
    messages = [invitation(n) for n in range(25)]
    sender = sender_for(moto_server, queue_url)
    try:
        assert await sender.send_batch(messages) == []
    finally:
        await sender.aclose()
    received = await receive_all(moto_server, queue_url, 25)
    assert len(received) == 25
    by_id = {m.message_id: m for m in messages}
    seen = set()
    for item in received:
        body = orjson.loads(item["Body"])
        validator.validate(body)
        assert body["schema"] == "dispatch-engine.invitation/v1"
        assert item["Body"].encode() == by_id[body["message_id"]].body
        assert item["MD5OfBody"] == hashlib.md5(item["Body"].encode()).hexdigest()
        assert "MessageGroupId" not in item["Attributes"]
        assert "MessageDeduplicationId" not in item["Attributes"]
        seen.add(body["message_id"])
    assert seen == set(by_id)


async def test_fifo_sets_group_and_dedup_ids_and_keeps_group_order(
    moto_server: Moto, validator: Draft202012Validator
) -> None:
    queue_url = await moto_server.create_queue("fifo", fifo=True)
    # Three invites, interleaved; invite "big" has 12 messages (more than one request holds).
    messages: list[OutgoingMessage] = []
    n = 0
    for position in range(1, 13):
        for invite in ("big", "a", "b") if position <= 3 else ("big",):
            messages.append(invitation(n, invite=invite, position=position))
            n += 1
    sender = sender_for(moto_server, queue_url, fifo=True)
    try:
        assert await sender.send_batch(messages) == []
    finally:
        await sender.aclose()
    received = await receive_all(moto_server, queue_url, len(messages))
    assert len(received) == len(messages) == 18
    order: dict[str, list[str]] = {}
    for item in received:
        body = orjson.loads(item["Body"])
        validator.validate(body)
        attributes = item["Attributes"]
        assert attributes["MessageGroupId"] == body["invite_id"]
        assert attributes["MessageDeduplicationId"] == body["message_id"]
        order.setdefault(body["invite_id"], []).append(body["message_id"])
    for invite, ids in order.items():
        assert ids == [m.message_id for m in messages if m.group_id == invite]


async def test_fifo_resend_within_the_window_is_not_duplicated(moto_server: Moto) -> None:
    queue_url = await moto_server.create_queue("dedup", fifo=True)
    first = [invitation(n) for n in range(3)]
    sender = sender_for(moto_server, queue_url, fifo=True)
    try:
        assert await sender.send_batch(first) == []
        # The relay lost the acknowledgement and sends the same messages again.
        assert await sender.send_batch(first) == []
        assert await sender.send_batch([first[1]]) == []
    finally:
        await sender.aclose()
    received = await receive_all(moto_server, queue_url, 3)
    ids = sorted(item["Attributes"]["MessageDeduplicationId"] for item in received)
    assert ids == ["m00000", "m00001", "m00002"]


async def test_oversized_message_fails_for_good_and_the_rest_is_sent(moto_server: Moto) -> None:
    queue_url = await moto_server.create_queue("big")
    messages = [invitation(n) for n in range(5)]
    size = len(messages[0].body) + 1000
    body = orjson.dumps({"padding": "x" * size})
    messages[2] = OutgoingMessage("m-big", "inv-big", body)
    sender = sender_for(moto_server, queue_url, max_message_bytes=size)
    try:
        failures = await sender.send_batch(messages)
    finally:
        await sender.aclose()
    assert failures == [
        SendFailure(
            "m-big",
            f"message is {len(body)} bytes; the queue accepts at most {size}",
            retryable=False,
        )
    ]
    received = await receive_all(moto_server, queue_url, 4)
    assert sorted(orjson.loads(m["Body"])["message_id"] for m in received) == [
        "m00000",
        "m00001",
        "m00003",
        "m00004",
    ]


async def test_batch_byte_limit_splits_requests(moto_server: Moto) -> None:
    queue_url = await moto_server.create_queue("split")
    messages = [invitation(n) for n in range(12)]
    size = max(len(m.body) for m in messages)
    requests: list[int] = []

    class Counting(SqsQueueSender):
        async def _send(self, batch: Any) -> list[SendFailure]:
            requests.append(sum(item.size for item in batch))
            return await super()._send(batch)

    sender = Counting(
        queue_url=queue_url,
        region=REGION,
        fifo=False,
        endpoint_url=moto_server.endpoint_url,
        access_key_id=KEY,
        secret_access_key=SECRET,
        limits=SqsLimits(max_batch_bytes=2 * size + 10),
    )
    try:
        assert await sender.send_batch(messages) == []
    finally:
        await sender.aclose()
    assert len(requests) == 6
    assert all(total <= 2 * size + 10 for total in requests)
    received = await receive_all(moto_server, queue_url, 12)
    assert {orjson.loads(m["Body"])["message_id"] for m in received} == {
        m.message_id for m in messages
    }


async def test_nonexistent_queue_fails_every_message_for_good(moto_server: Moto) -> None:
    queue_url = f"{moto_server.endpoint_url}/123456789012/no-such-queue"
    messages = [invitation(n) for n in range(12)]
    sender = sender_for(moto_server, queue_url)
    try:
        failures = await sender.send_batch(messages)
    finally:
        await sender.aclose()
    assert [f.message_id for f in failures] == [m.message_id for m in messages]
    for failure in failures:
        assert not failure.retryable
        assert failure.about_queue  # the queue's fault: shown on the integration
        assert "does not exist" in failure.error
        assert "127.0.0.1" not in failure.error and "no-such-queue" not in failure.error


async def test_server_down_is_retryable_and_says_unreachable() -> None:
    port = free_port()  # nothing listens there
    sender = SqsQueueSender(
        queue_url=f"http://127.0.0.1:{port}/123456789012/q",
        region=REGION,
        fifo=False,
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id=KEY,
        secret_access_key=SECRET,
        limits=SqsLimits(connect_timeout=1, read_timeout=1),
    )
    messages = [invitation(n) for n in range(3)]
    try:
        failures = await sender.send_batch(messages)
    finally:
        await sender.aclose()
    assert [f.message_id for f in failures] == [m.message_id for m in messages]
    for failure in failures:
        assert failure.retryable
        assert failure.about_queue
        assert failure.error.startswith("queue unreachable: ")
        assert str(port) not in failure.error


async def test_probe_sends_one_message(moto_server: Moto, validator: Draft202012Validator) -> None:
    queue_url = await moto_server.create_queue("probe", fifo=True)
    body = encode_message(build_probe(message_id="probe-1", account="acme", sent_at=T0))
    sender = sender_for(moto_server, queue_url, fifo=True)
    try:
        await sender.probe(body, "probe-1")
    finally:
        await sender.aclose()
    received = await receive_all(moto_server, queue_url, 1)
    assert len(received) == 1
    validator.validate(orjson.loads(received[0]["Body"]))
    assert received[0]["Attributes"]["MessageDeduplicationId"] == "probe-1"


async def test_probe_of_a_missing_queue_raises_plain_words(moto_server: Moto) -> None:
    sender = sender_for(moto_server, f"{moto_server.endpoint_url}/123456789012/missing")
    try:
        with pytest.raises(SqsError) as caught:
            await sender.probe(b'{"probe": true}', "probe-2")
    finally:
        await sender.aclose()
    assert not caught.value.retryable
    assert "the queue does not exist" in caught.value.reason
    assert "missing" not in caught.value.reason


async def test_aclose_closes_the_client_and_is_idempotent(moto_server: Moto) -> None:
    queue_url = await moto_server.create_queue("close")
    sender = sender_for(moto_server, queue_url)
    assert await sender.send_batch([invitation(1)]) == []
    client = sender._client
    assert client is not None
    assert await sender.send_batch([invitation(2)]) == []
    assert sender._client is client  # one client, reused
    http_sessions = list(client._endpoint.http_session._sessions.values())
    assert http_sessions and not any(s.closed for s in http_sessions)
    await sender.aclose()
    assert sender._client is None
    assert all(s.closed for s in http_sessions)
    await sender.aclose()  # harmless
    late = await sender.send_batch([invitation(3)])
    assert late == [SendFailure("m00003", "queue sender is closed", retryable=True)]


async def test_requests_carry_the_services_fixed_user_agent(moto_server: Moto) -> None:
    """One User-Agent built once (botocore's own costs ~200 µs per request to assemble); it
    names the service and botocore, so AWS request logs still show the SDK."""
    queue_url = await moto_server.create_queue("ua")
    sender = sender_for(moto_server, queue_url)
    seen: list[str] = []

    def record(request: Any, **_: Any) -> None:  # observes; returning None sends as usual
        seen.append(request.headers["User-Agent"])

    try:
        assert await sender.send_batch([invitation(1)]) == []
        assert sender._client is not None
        sender._client.meta.events.register("before-send.sqs.SendMessageBatch", record)
        assert await sender.send_batch([invitation(2), invitation(3)]) == []
    finally:
        await sender.aclose()
    assert len(seen) == 1
    agent = seen[0].decode() if isinstance(seen[0], bytes) else seen[0]
    assert agent.startswith(USER_AGENT + " ")
    assert agent.startswith("dispatch-engine/") and " botocore/" in agent
    assert len(await receive_all(moto_server, queue_url, 3)) == 3


# -- against a scripted client -----------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def client_error(code: str, status: int, message: str = "nope") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendMessageBatch",
    )


class FakeClient:
    """Answers SendMessageBatch through `script(entries)`; records every request."""

    def __init__(self, script: Any = None, delay: float = 0.0) -> None:
        self.script = script or (lambda entries: None)
        self.delay = delay
        self.requests: list[list[dict[str, str]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def send_message_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, str]]
    ) -> dict[str, Any]:
        self.requests.append(Entries)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = self.script(Entries)
            if isinstance(answer, BaseException):
                raise answer
            if answer is None:
                answer = {
                    "Successful": [
                        {
                            "Id": e["Id"],
                            "MessageId": "x",
                            "MD5OfMessageBody": _md5(e["MessageBody"]),
                        }
                        for e in Entries
                    ],
                    "Failed": [],
                }
            return answer
        finally:
            self.in_flight -= 1


class FakeSession:
    def __init__(self, client: FakeClient) -> None:
        self.fake = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def client(self, service: str, **kwargs: Any) -> Any:
        self.calls.append((service, kwargs))
        fake = self.fake

        class Context:
            async def __aenter__(self) -> FakeClient:
                return fake

            async def __aexit__(self, *exc: object) -> None:
                fake.closed = True

        return Context()


def scripted(
    client: FakeClient, *, fifo: bool = False, with_keys: bool = True, **limits: Any
) -> tuple[SqsQueueSender, FakeSession]:
    session = FakeSession(client)
    keys = {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3cr3t"} if with_keys else {}
    sender = SqsQueueSender(
        queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/q" + (".fifo" if fifo else ""),
        region="eu-west-1",
        fifo=fifo,
        limits=SqsLimits(**limits),
        session=session,
        **keys,
    )
    return sender, session


def simple(n: int, group: str | None = None, size: int = 20) -> OutgoingMessage:
    body = orjson.dumps({"n": n, "pad": "x" * max(0, size - 20)})
    return OutgoingMessage(f"id{n}", group or f"g{n}", body)


async def test_client_is_built_once_with_config_and_explicit_keys() -> None:
    fake = FakeClient()
    sender, session = scripted(fake, concurrency=16)
    assert await sender.send_batch([simple(n) for n in range(25)]) == []
    assert await sender.send_batch([simple(99)]) == []
    assert len(session.calls) == 1
    service, kwargs = session.calls[0]
    assert service == "sqs"
    assert kwargs["region_name"] == "eu-west-1"
    assert kwargs["aws_access_key_id"] == "AKIAEXAMPLE"
    assert kwargs["aws_secret_access_key"] == "s3cr3t"
    config = kwargs["config"]
    assert config.retries == {"max_attempts": 1, "mode": "standard"}
    assert config.max_pool_connections >= 16
    assert config.connect_timeout and config.read_timeout
    await sender.aclose()
    assert fake.closed


async def test_default_credential_chain_without_keys() -> None:
    sender, session = scripted(FakeClient(), with_keys=False)
    assert await sender.send_batch([simple(1)]) == []
    kwargs = session.calls[0][1]
    assert "aws_access_key_id" not in kwargs and "aws_secret_access_key" not in kwargs
    await sender.aclose()


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        SqsQueueSender(queue_url="https://x", region="us-east-1", fifo=False, access_key_id="A")


async def test_batches_hold_at_most_ten_entries_with_unique_ids() -> None:
    fake = FakeClient()
    sender, _ = scripted(fake)
    messages = [simple(n) for n in range(23)]
    assert await sender.send_batch(messages) == []
    assert sorted(len(r) for r in fake.requests) == [3, 10, 10]
    ids = [e["Id"] for r in fake.requests for e in r]
    assert len(set(ids)) == 23
    bodies = {e["MessageBody"] for r in fake.requests for e in r}
    assert bodies == {m.body.decode() for m in messages}
    assert all("MessageGroupId" not in e for r in fake.requests for e in r)


async def test_fifo_keeps_a_groups_messages_in_one_request_in_order() -> None:
    fake = FakeClient()
    sender, _ = scripted(fake, fifo=True)
    messages = [simple(n, group=f"g{n % 4}") for n in range(8)] + [simple(8, group="g1")]
    assert await sender.send_batch(messages) == []
    for group in ("g0", "g1", "g2", "g3"):
        holding = [r for r in fake.requests if any(e["MessageGroupId"] == group for e in r)]
        assert len(holding) == 1
        sent = [e["MessageDeduplicationId"] for e in holding[0] if e["MessageGroupId"] == group]
        assert sent == [m.message_id for m in messages if m.group_id == group]


async def test_fifo_group_larger_than_a_request_stops_at_its_first_failure() -> None:
    def script(entries: list[dict[str, str]]) -> Any:
        if entries[0]["MessageDeduplicationId"] == "id0":
            return client_error("ServiceUnavailable", 503)
        return None

    fake = FakeClient(script)
    sender, _ = scripted(fake, fifo=True)
    messages = [simple(n, group="one") for n in range(15)]
    failures = await sender.send_batch(messages)
    assert len(fake.requests) == 1  # the second request would overtake the failed first one
    assert [f.message_id for f in failures] == [m.message_id for m in messages]
    assert all(f.retryable for f in failures)
    assert failures[-1].error == "not sent: an earlier message of its group failed"


async def test_partial_failures_sender_fault_decides_retry() -> None:
    def script(entries: list[dict[str, str]]) -> Any:
        return {
            "Successful": [
                {"Id": e["Id"], "MessageId": "x", "MD5OfMessageBody": _md5(e["MessageBody"])}
                for e in entries[2:]
            ],
            "Failed": [
                {"Id": entries[0]["Id"], "SenderFault": True, "Code": "InvalidMessageContents",
                 "Message": "bad characters in https://sqs.eu-west-1.amazonaws.com/1/q"},
                {"Id": entries[1]["Id"], "SenderFault": False, "Code": "InternalError",
                 "Message": "try again"},
            ],
        }  # fmt: skip

    sender, _ = scripted(FakeClient(script))
    failures = await sender.send_batch([simple(n) for n in range(5)])
    assert len(failures) == 2
    assert failures[0].message_id == "id0" and not failures[0].retryable
    assert failures[0].error.startswith("InvalidMessageContents: bad characters in")
    assert "amazonaws" not in failures[0].error
    assert failures[1] == SendFailure(
        "id1", "InternalError: the queue service had an internal error", True
    )


async def test_missing_acknowledgement_and_md5_mismatch_are_retryable_failures() -> None:
    def script(entries: list[dict[str, str]]) -> Any:
        return {
            "Successful": [
                {"Id": entries[0]["Id"], "MessageId": "x", "MD5OfMessageBody": _md5("other")},
                {"Id": entries[1]["Id"], "MessageId": "y",
                 "MD5OfMessageBody": _md5(entries[1]["MessageBody"])},
            ],
            "Failed": [],
        }  # fmt: skip

    sender, _ = scripted(FakeClient(script))
    failures = await sender.send_batch([simple(n) for n in range(3)])
    assert [(f.message_id, f.retryable) for f in failures] == [("id0", True), ("id2", True)]
    assert "MD5" in failures[0].error
    assert failures[1].error == "the queue did not acknowledge the message"


@pytest.mark.parametrize(
    ("error", "retryable", "text"),
    [
        (client_error("ThrottlingException", 400), True, "throttling"),
        (client_error("RequestThrottled", 403), True, "throttling"),
        (client_error("AWS.SimpleQueueService.ServiceUnavailable", 503), True, "unavailable"),
        (client_error("InternalError", 500), True, "internal error"),
        (client_error("KmsThrottled", 400), True, "KMS"),
        (client_error("SomethingNew", 502), True, "SomethingNew"),
        (client_error("AccessDenied", 403, "User: arn:aws:iam::123456789012:user/bob"), False,
         "access denied"),
        (client_error("InvalidClientTokenId", 403), False, "access key id"),
        (client_error("SignatureDoesNotMatch", 403), False, "secret access key"),
        (client_error("AWS.SimpleQueueService.NonExistentQueue", 400), False, "does not exist"),
        (client_error("QueueDoesNotExist", 400), False, "does not exist"),
        (client_error("SomethingElse", 400, "see 10.0.0.1 or s3cr3t.example.com"), False,
         "SomethingElse"),
        (ReadTimeoutError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"), True,
         "queue unreachable: ReadTimeoutError"),
        (TimeoutError(), True, "queue unreachable: TimeoutError"),
    ],
)  # fmt: skip
async def test_whole_request_errors(error: BaseException, retryable: bool, text: str) -> None:
    sender, _ = scripted(FakeClient(lambda entries: error))
    failures = await sender.send_batch([simple(n) for n in range(3)])
    assert [f.message_id for f in failures] == ["id0", "id1", "id2"]
    for failure in failures:
        assert failure.retryable is retryable
        assert failure.about_queue  # the request, not a message: shown on the integration
        assert text in failure.error
        for secret in ("s3cr3t", "AKIAEXAMPLE", "amazonaws", "123456789012", "10.0.0.1", '"n"'):
            assert secret not in failure.error


async def test_request_refused_for_content_is_retried_entry_by_entry() -> None:
    def script(entries: list[dict[str, str]]) -> Any:
        if any('"n":1,' in e["MessageBody"] for e in entries):
            return client_error(
                "InvalidParameterValue", 400, "Reason: Message must be shorter than 1024 bytes."
            )
        return None

    fake = FakeClient(script)
    sender, _ = scripted(fake)
    failures = await sender.send_batch([simple(n) for n in range(4)])
    assert failures == [
        SendFailure(
            "id1",
            "InvalidParameterValue: Reason: Message must be shorter than 1024 bytes.",
            retryable=False,
        )
    ]
    assert [len(r) for r in fake.requests] == [4, 1, 1, 1, 1]


async def test_concurrency_is_bounded() -> None:
    fake = FakeClient(delay=0.02)
    sender, _ = scripted(fake, concurrency=3)
    assert await sender.send_batch([simple(n) for n in range(100)]) == []
    assert len(fake.requests) == 10
    assert fake.max_in_flight == 3


async def test_non_utf8_body_fails_for_good() -> None:
    sender, _ = scripted(FakeClient())
    failures = await sender.send_batch([OutgoingMessage("bad", "g", b"\xff\xfe"), simple(1)])
    assert failures == [SendFailure("bad", "message body is not UTF-8", retryable=False)]


async def test_byte_limit_packs_requests() -> None:
    fake = FakeClient()
    sender, _ = scripted(fake, max_batch_bytes=100)
    messages: Sequence[OutgoingMessage] = [simple(n, size=40) for n in range(7)]
    assert await sender.send_batch(messages) == []
    assert [len(r) for r in fake.requests] == [2, 2, 2, 1]
