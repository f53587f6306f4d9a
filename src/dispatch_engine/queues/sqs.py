"""The Amazon SQS sender (R-Q-1): `SendMessageBatch` calls, several in flight per sender.

Batching. A `send_batch` call is split into `SendMessageBatch` requests of at most
`max_batch_entries` (10) entries and at most `max_batch_bytes` of message bodies. A message
larger than `max_message_bytes` is never sent: it comes back as a non-retryable failure.
Up to `concurrency` requests run at once per sender (one client, one connection pool).

FIFO queues. Each entry carries `MessageGroupId` = the message's group id (its invite id:
one invite's messages stay ordered while different invites flow in parallel) and
`MessageDeduplicationId` = its message id. Messages of one group given in one call go in
the same request, in order (a group too big for one request is sent as consecutive
requests, one after the other, and stops at its first failure so nothing overtakes a
message that will be retried). Standard queues get neither attribute; their order is best
effort anyway.

Idempotence. The relay is at least once: a message whose acknowledgement was lost is sent
again with the *same* message id. On FIFO queues SQS drops such a re-send when it arrives
within the 5-minute de-duplication window; after that window, and always on standard
queues, consumers de-duplicate on the `message_id` inside the body (R-Q-1 contract).

Errors. The relay retries what is `retryable` and gives up on the rest:
- entries listed as `Failed` in an answer: `SenderFault: true` is not retryable, any other
  failure is;
- a whole request refused: throttling and server errors are retryable; unknown queues,
  refused credentials and invalid requests are not (a request refused for its content is
  re-tried entry by entry first, so one bad message does not sink nine good ones);
- no answer (connection refused or reset, timeouts): retryable, "queue unreachable: …".
Error texts are plain words with the AWS error code; they never carry a credential, a
message body or an address (URLs, ARNs, IP and email addresses are scrubbed).

SSRF. Given a URL policy (the factory always passes the settings' one), the sender vets
`endpoint_url` before it creates its client (static rules, then the host's addresses as
resolved now) and resolves through `VettingResolver`, so every new connection goes to an
address vetted at that moment. A refusal is a non-retryable failure about the queue:
"endpoint_url refused: …" (security/queue_endpoints.py, docs/queues.md).

Credentials: the explicit key pair when given, else the default AWS credential chain
(environment, profile, container or instance role) as botocore resolves it. botocore's own
retries are off (the relay retries with backoff and records attempts).
"""

from __future__ import annotations

import asyncio
import hashlib
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import aioboto3
import aiohttp
import structlog
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from dispatch_engine import __version__
from dispatch_engine.queues.base import OutgoingMessage, SendFailure
from dispatch_engine.security.queue_endpoints import (
    ForbiddenAddressError,
    VettingResolver,
    vet_url,
)
from dispatch_engine.security.ssrf import HostResolutionError, UnsafeUrlError, UrlPolicy

__all__ = ["SqsError", "SqsLimits", "SqsQueueSender"]

log = structlog.get_logger(__name__)
# One fixed User-Agent, built once: botocore otherwise assembles and sanitises its
# ~20-component header twice per request: ~75 µs of CPU per SendMessageBatch, a sixth of
# the sender's cost per message (bench.relay). botocore appends its own name and version.
USER_AGENT: Final = f"dispatch-engine/{__version__} Python/{platform.python_version()}"


@dataclass(frozen=True)
class SqsLimits:
    """Sizes and knobs; the byte limits are settings because AWS raised them to 1 MiB."""

    max_message_bytes: int = 256 * 1024  # per message (a setting; 1 MiB allowed)
    max_batch_bytes: int = 256 * 1024  # per SendMessageBatch payload
    max_batch_entries: int = 10
    concurrency: int = 8  # batches in flight per sender
    connect_timeout: float = 3.0  # seconds
    read_timeout: float = 10.0  # seconds

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_entries <= 10:
            raise ValueError("max_batch_entries must be between 1 and 10")
        if self.max_message_bytes < 1 or self.max_batch_bytes < 1 or self.concurrency < 1:
            raise ValueError("SQS limits must be positive")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("SQS timeouts must be positive")


class SqsError(Exception):
    """A probe that failed; `reason` is plain words, safe to show and store. `about_queue`:
    the integration itself is at fault (see SendFailure.about_queue)."""

    def __init__(self, reason: str, *, retryable: bool, about_queue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.about_queue = about_queue


def _refused_endpoint(reason: str) -> SqsError:
    return SqsError(f"endpoint_url refused: {reason}", retryable=False, about_queue=True)


def _forbidden_address(exc: BaseException) -> ForbiddenAddressError | None:
    """The resolver's refusal behind a connection error (aiohttp and botocore wrap it)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ForbiddenAddressError):
            return current
        wrapped = getattr(current, "os_error", None)  # aiohttp's ClientConnectorError
        pending.extend([current.__cause__, current.__context__])
        if isinstance(wrapped, BaseException):
            pending.append(wrapped)
    return None


# Error codes as botocore reports them for the SQS JSON protocol: the query-compatible
# code from `x-amzn-query-error` when present (e.g. AWS.SimpleQueueService.NonExistentQueue),
# else the shape name (e.g. QueueDoesNotExist). Compared without the SQS prefixes.
_RETRYABLE_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "RequestExpired",
        "RequestTimeTooSkewed",
    }
)
_PERMANENT_CODES: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidSecurity",
        "NonExistentQueue",
        "QueueDoesNotExist",
        "InvalidAddress",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "InvalidMessageContents",
        "UnsupportedOperation",
        "BatchRequestTooLong",
        "TooManyEntriesInBatchRequest",
        "BatchEntryIdsNotDistinct",
        "InvalidBatchEntryId",
        "EmptyBatchRequest",
        "KmsAccessDenied",
        "KmsDisabled",
        "KmsNotFound",
        "KmsInvalidState",
        "KmsInvalidKeyUsage",
        "KmsOptInRequired",
        "OptInRequired",
        "InvalidAction",
    }
)
# A request refused for what one of its entries holds: worth re-trying entry by entry.
_CONTENT_CODES: Final = frozenset(
    {"InvalidParameterValue", "InvalidMessageContents", "BatchRequestTooLong"}
)
_PLAIN: Final[Mapping[str, str]] = {
    "AccessDenied": "access denied: these credentials may not send to this queue",
    "AccessDeniedException": "access denied: these credentials may not send to this queue",
    "InvalidClientTokenId": "the access key id is not known to AWS",
    "UnrecognizedClientException": "the access key id is not known to AWS",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidSecurity": "the queue refuses unsigned or non-HTTPS requests",
    "NonExistentQueue": "the queue does not exist (check queue_url and region)",
    "QueueDoesNotExist": "the queue does not exist (check queue_url and region)",
    "InvalidAddress": "the queue URL is not valid for this endpoint",
    "Throttling": "the queue is throttling requests",
    "ThrottlingException": "the queue is throttling requests",
    "RequestThrottled": "the queue is throttling requests",
    "ServiceUnavailable": "the queue service is unavailable",
    "InternalError": "the queue service had an internal error",
    "KmsThrottled": "the queue's KMS key is throttling requests",
    "KmsAccessDenied": "the queue's KMS key refuses these credentials",
    "KmsDisabled": "the queue's KMS key is disabled",
    "KmsNotFound": "the queue's KMS key does not exist",
}
_SQS_PREFIXES: Final = ("AWS.SimpleQueueService.", "com.amazonaws.sqs#")
# Whatever the server says is scrubbed of addresses and keys before it is kept.
_SCRUB: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://\S+"  # URLs (queue URLs, endpoints)
    r"|arn:[^\s,;\"']+"  # ARNs (account, user, queue)
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b"  # access key ids
    r"|[^\s@]+@[^\s@]+"  # email addresses
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"  # IPv4 addresses
    r"|(?:[0-9A-Fa-f]{0,4}:){3,7}[0-9A-Fa-f]{0,4}|::1\b"  # IPv6 addresses
    r"|\b(?:[a-z0-9-]+\.)+[a-z]{2,63}(?::\d+)?\b"  # host names
    r"|\b\d{12}\b"  # AWS account ids
)
_UNREACHABLE: Final = (
    BotoConnectionError,  # EndpointConnectionError, ConnectTimeoutError, SSL, proxy
    HTTPClientError,  # ReadTimeoutError, ConnectionClosedError
    aiohttp.ClientError,
    TimeoutError,  # asyncio.TimeoutError is TimeoutError on 3.11
    ConnectionError,
)
_MAX_TEXT: Final = 300


def _scrub(text: str) -> str:
    cleaned = " ".join(_SCRUB.sub("[redacted]", text).split())
    return cleaned[:_MAX_TEXT]


def _bare_code(code: str) -> str:
    for prefix in _SQS_PREFIXES:
        if code.startswith(prefix):
            return code[len(prefix) :]
    return code


def _describe(code: str, message: str) -> str:
    plain = _PLAIN.get(_bare_code(code))
    if plain is None:
        plain = _scrub(message) or "no reason given"
    return f"{code}: {plain}"


def _every(
    batch: Batch, error: str, retryable: bool, *, about_queue: bool = True
) -> list[SendFailure]:
    """The same failure for every message of a request the queue did not take as a whole."""
    return [
        SendFailure(i.message.message_id, error, retryable, about_queue=about_queue) for i in batch
    ]


def _client_error(exc: ClientError) -> tuple[str, str, bool]:
    """(code, error text, retryable) of a refused request."""
    response: Mapping[str, Any] = exc.response or {}
    error: Mapping[str, Any] = response.get("Error") or {}
    code = str(error.get("Code") or "Unknown")
    message = str(error.get("Message") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    bare = _bare_code(code)
    if bare in _RETRYABLE_CODES:
        retryable = True
    elif bare in _PERMANENT_CODES:
        retryable = False
    elif isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        retryable = False  # some other refusal of this request: sending it again won't help
    else:
        retryable = True  # 5xx, 408, 429 or no status: a passing condition
    return bare, _describe(code, message), retryable


class _Item(NamedTuple):  # a tuple: built for every message pushed
    position: int  # position in the send_batch call: the entry Id (unique, [0-9]+)
    message: OutgoingMessage
    text: str  # the body as UTF-8 text (SQS MessageBody)
    size: int  # body bytes


Batch = list[_Item]
Lane = list[Batch]  # requests sent one after the other (a FIFO group split across requests)


class SqsQueueSender:
    """Sends to one SQS queue through one lazily created aioboto3 client."""

    def __init__(
        self,
        *,
        queue_url: str,
        region: str,
        fifo: bool,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        limits: SqsLimits = SqsLimits(),  # frozen: one shared default is safe
        session: aioboto3.Session | None = None,
        url_policy: UrlPolicy | None = None,
    ) -> None:
        """`url_policy`: the SSRF rules for the endpoint (None: none, for tests and benches
        that bring their own server; the factory always passes the settings' policy)."""
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        self.queue_url = queue_url
        self.region = region
        self.fifo = fifo
        self.endpoint_url = endpoint_url
        self.limits = limits
        self._url_policy = url_policy
        self._credentials: dict[str, str] = (
            {"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
            if access_key_id is not None and secret_access_key is not None
            else {}
        )
        self._session: Any = session
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._client_lock = asyncio.Lock()
        self._client_context: Any = None
        self._client: Any = None
        self._closed = False
        # Overall bound per request, on top of botocore's per-socket-operation timeouts.
        self._call_timeout = limits.connect_timeout + limits.read_timeout + 5.0

    # -- the QueueSender protocol -------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        failures: list[SendFailure] = []
        items: list[_Item] = []
        limit = self.limits.max_message_bytes
        for index, message in enumerate(messages):
            size = len(message.body)
            if size > limit:
                failures.append(
                    SendFailure(
                        message.message_id,
                        f"message is {size} bytes; the queue accepts at most {limit}",
                        retryable=False,
                    )
                )
                continue
            try:
                text = message.body.decode("utf-8")
            except UnicodeDecodeError:
                failures.append(
                    SendFailure(message.message_id, "message body is not UTF-8", retryable=False)
                )
                continue
            items.append(_Item(index, message, text, size))
        if not items:
            return failures
        if self._closed:
            return failures + [
                SendFailure(i.message.message_id, "queue sender is closed", retryable=True)
                for i in items
            ]
        lanes = self._plan(items)
        if len(lanes) == 1:
            failures.extend(await self._run_lane(lanes[0]))
            return failures
        # `concurrency` runners take lanes from one iterator: a call of 500 messages makes
        # a handful of tasks, not fifty that would mostly wait on the semaphore.
        answers: list[list[SendFailure]] = [[] for _ in lanes]
        waiting = iter(enumerate(lanes))

        async def runner() -> None:
            for number, lane in waiting:
                answers[number] = await self._run_lane(lane)

        await asyncio.gather(*(runner() for _ in range(min(len(lanes), self.limits.concurrency))))
        for answer in answers:  # in the order of the call
            failures.extend(answer)
        return failures

    async def probe(self, body: bytes, message_id: str) -> None:
        """Send one message (a probe) through the same path as real sends.

        On a FIFO queue the probe is its own message group and `message_id` its
        de-duplication id. Raises SqsError with a plain-words reason when the queue did
        not take it.
        """
        failures = await self.send_batch([OutgoingMessage(message_id, message_id, body)])
        if failures:
            raise SqsError(failures[0].error, retryable=failures[0].retryable)

    async def aclose(self) -> None:
        self._closed = True
        async with self._client_lock:
            context, self._client_context, self._client = self._client_context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    # -- planning ---------------------------------------------------------------------

    def _plan(self, items: list[_Item]) -> list[Lane]:
        """Requests to make: lanes run concurrently, the requests of one lane in order."""
        if not self.fifo:
            return [[batch] for batch in self._split(items)]  # no order to keep: pack them
        groups: dict[str, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.message.group_id, []).append(item)
        units = list(groups.values())
        max_entries = self.limits.max_batch_entries
        max_bytes = self.limits.max_batch_bytes
        lanes: list[Lane] = []
        current: Batch = []
        current_bytes = 0
        for unit in units:
            unit_bytes = sum(i.size for i in unit)
            fits_alone = len(unit) == 1 or (len(unit) <= max_entries and unit_bytes <= max_bytes)
            if not fits_alone:
                lanes.append(self._split(unit))
                continue
            if current and (
                len(current) + len(unit) > max_entries or current_bytes + unit_bytes > max_bytes
            ):
                lanes.append([current])
                current, current_bytes = [], 0
            current.extend(unit)
            current_bytes += unit_bytes
        if current:
            lanes.append([current])
        return lanes

    def _split(self, unit: list[_Item]) -> Lane:
        """Messages as consecutive requests within the entry and byte limits, in order (one
        FIFO group's, or all of a call to a standard queue)."""
        batches: Lane = []
        current: Batch = []
        current_bytes = 0
        for item in unit:
            if current and (
                len(current) >= self.limits.max_batch_entries
                or current_bytes + item.size > self.limits.max_batch_bytes
            ):
                batches.append(current)
                current, current_bytes = [], 0
            current.append(item)
            current_bytes += item.size
        if current:
            batches.append(current)
        return batches

    # -- sending ----------------------------------------------------------------------

    async def _run_lane(self, lane: Lane) -> list[SendFailure]:
        failures: list[SendFailure] = []
        for position, batch in enumerate(lane):
            try:
                batch_failures = await self._send(batch)
            except Exception as exc:  # a bug must not lose the other lanes' answers
                log.warning("sqs_send_error", error_type=type(exc).__name__)
                batch_failures = [
                    SendFailure(
                        i.message.message_id,
                        f"queue push failed: {type(exc).__name__}",
                        retryable=True,
                    )
                    for i in batch
                ]
            failures.extend(batch_failures)
            if batch_failures and position + 1 < len(lane):
                # Only FIFO groups span requests: hold back the rest of the group so nothing
                # overtakes the message that will be retried.
                failures.extend(
                    SendFailure(
                        i.message.message_id,
                        "not sent: an earlier message of its group failed",
                        retryable=True,
                    )
                    for later in lane[position + 1 :]
                    for i in later
                )
                break
        return failures

    async def _send(self, batch: Batch) -> list[SendFailure]:
        """One SendMessageBatch request; every entry ends acknowledged or in the result."""
        entries = [self._entry(item) for item in batch]
        try:
            async with self._slots:
                client = await self._get_client()
                async with asyncio.timeout(self._call_timeout):
                    response = await client.send_message_batch(
                        QueueUrl=self.queue_url, Entries=entries
                    )
        except SqsError as exc:  # closed (shutdown), or the endpoint refused by the policy
            return _every(batch, exc.reason, exc.retryable, about_queue=exc.about_queue)
        except ClientError as exc:
            code, error, retryable = _client_error(exc)
            log.warning("sqs_request_refused", code=code, entries=len(batch))
            if len(batch) > 1 and code in _CONTENT_CODES:
                return await self._send_one_by_one(batch)
            return _every(batch, error, retryable, about_queue=code not in _CONTENT_CODES)
        except _UNREACHABLE as exc:
            forbidden = _forbidden_address(exc)
            if forbidden is not None:  # the host resolves elsewhere now (DNS rebinding)
                log.warning("sqs_endpoint_refused", entries=len(batch))
                refused = _refused_endpoint(forbidden.reason)
                return _every(batch, refused.reason, retryable=False)
            log.warning("sqs_unreachable", error_type=type(exc).__name__, entries=len(batch))
            return _every(batch, f"queue unreachable: {type(exc).__name__}", True)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            # The default chain found nothing usable; an instance role may come back.
            error = f"{type(exc).__name__}: no usable AWS credentials were found"
            return _every(batch, error, True)
        except BotoCoreError as exc:
            log.warning("sqs_client_error", error_type=type(exc).__name__)
            return _every(batch, f"{type(exc).__name__}: the request could not be made", True)
        return self._read_answer(batch, response)

    async def _send_one_by_one(self, batch: Batch) -> list[SendFailure]:
        """A request refused for its content: find the bad entries, let the others through."""
        failures: list[SendFailure] = []
        held: set[str] = set()
        for item in batch:
            if self.fifo and item.message.group_id in held:
                failures.append(
                    SendFailure(
                        item.message.message_id,
                        "not sent: an earlier message of its group failed",
                        retryable=True,
                    )
                )
                continue
            got = await self._send([item])
            if got:
                held.add(item.message.group_id)
                failures.extend(got)
        return failures

    def _entry(self, item: _Item) -> dict[str, str]:
        entry = {"Id": str(item.position), "MessageBody": item.text}
        if self.fifo:
            entry["MessageGroupId"] = item.message.group_id
            entry["MessageDeduplicationId"] = item.message.message_id
        return entry

    def _read_answer(self, batch: Batch, response: Mapping[str, Any]) -> list[SendFailure]:
        waiting = {str(item.position): item for item in batch}
        failures: list[SendFailure] = []
        for ok in response.get("Successful") or ():
            item = waiting.pop(str(ok.get("Id")), None)
            if item is None:
                continue
            expected = hashlib.md5(item.message.body, usedforsecurity=False).hexdigest()
            digest = ok.get("MD5OfMessageBody")
            if digest is not None and digest != expected:
                failures.append(
                    SendFailure(
                        item.message.message_id,
                        "the queue acknowledged a different body (MD5 mismatch)",
                        retryable=True,
                    )
                )
        for bad in response.get("Failed") or ():
            item = waiting.pop(str(bad.get("Id")), None)
            if item is None:
                continue
            code = str(bad.get("Code") or "Unknown")
            failures.append(
                SendFailure(
                    item.message.message_id,
                    _describe(code, str(bad.get("Message") or "")),
                    retryable=not bool(bad.get("SenderFault", False)),
                )
            )
        failures.extend(
            SendFailure(
                item.message.message_id,
                "the queue did not acknowledge the message",
                retryable=True,
            )
            for item in waiting.values()
        )
        return failures

    async def _get_client(self) -> Any:
        client = self._client
        if client is not None:
            return client
        async with self._client_lock:
            if self._client is None:
                if self._closed:
                    raise SqsError("queue sender is closed", retryable=True)
                await self._vet_endpoint()
                if self._session is None:
                    self._session = aioboto3.Session()
                config = AioConfig(
                    connector_args=self._connector_args(),
                    connect_timeout=self.limits.connect_timeout,
                    read_timeout=self.limits.read_timeout,
                    retries={"max_attempts": 1, "mode": "standard"},
                    max_pool_connections=max(10, self.limits.concurrency),
                    # Entries are built by `_entry` (every field a str, ids unique): botocore
                    # checking them again against the model costs ~14 µs per message.
                    parameter_validation=False,
                    user_agent=USER_AGENT,
                )
                context = self._session.client(
                    "sqs",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                    **self._credentials,
                )
                self._client = await context.__aenter__()
                self._client_context = context
            return self._client

    def _connector_args(self) -> dict[str, Any] | None:
        if self._url_policy is None:
            return None
        # Every new connection asks the resolver again: no cached, unvetted answer.
        return {"resolver": VettingResolver(self._url_policy), "use_dns_cache": False}

    async def _vet_endpoint(self) -> None:
        """Refuse an endpoint the policy forbids, before any client exists (IP literals are
        never passed to the resolver, and a clear reason beats "unreachable")."""
        if self._url_policy is None or self.endpoint_url is None:
            return
        try:
            await vet_url(self.endpoint_url, self._url_policy)
        except UnsafeUrlError as exc:
            log.warning("sqs_endpoint_refused")
            raise _refused_endpoint(exc.reason) from None
        except (HostResolutionError, TimeoutError):
            raise SqsError(
                "queue unreachable: the endpoint's host name could not be resolved",
                retryable=True,
                about_queue=True,
            ) from None
