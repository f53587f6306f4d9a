"""The `azure_service_bus` queue kind: pushes messages to a Service Bus queue or topic.

One aio ``ServiceBusClient`` and one sender per integration, created on first use, reused for
every batch and closed by :meth:`ServiceBusQueueSender.aclose`. Batches are built with the
SDK's own size accounting (``create_message_batch`` / ``add_message``), so no message size is
guessed here. Every message carries ``message_id`` = the outbox message id: with duplicate
detection enabled on the entity, a retried push is de-duplicated by Service Bus itself.

SSRF. Given a URL policy (the factory always passes the settings' one), the namespace host
is vetted before each push: static rules, then every address it resolves to now. The SDK
opens its own connections and takes no resolver, so it resolves the host again when it
connects; that window is the residual risk described in docs/queues.md.

Errors are turned into :class:`SendFailure` values in plain words. Service Bus error texts are
never passed on: they can quote the namespace, the entity path or a token request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from azure.core.exceptions import ClientAuthenticationError
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient
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

from dispatch_engine.queues.base import OutgoingMessage, SendFailure
from dispatch_engine.schemas.queue_message import SCHEMA_NAME
from dispatch_engine.security.queue_endpoints import (
    ServiceBusEndpoint,
    namespace_endpoint,
    servicebus_endpoint,
    vet_servicebus_endpoint,
)
from dispatch_engine.security.ssrf import HostResolutionError, UnsafeUrlError, UrlPolicy

__all__ = [
    "CONTENT_TYPE",
    "ServiceBusConfigError",
    "ServiceBusQueueSender",
    "ServiceBusSendError",
]

log = structlog.get_logger(__name__)

CONTENT_TYPE: Final = "application/json"
# An AMQP error condition such as "amqp:not-allowed": a fixed code, safe to show.
_CONDITION = re.compile(r"^[a-z][a-z0-9.:-]{0,63}$")


class ServiceBusSendError(Exception):
    """A probe (or a send) failed; ``reason`` is in plain words, without secrets or addresses."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class ServiceBusConfigError(ServiceBusSendError, ValueError):
    """The integration cannot work as configured (missing package, malformed settings)."""


@dataclass(frozen=True)
class _Problem:
    error: str
    retryable: bool
    # The entity refuses every message (credentials, rights, entity missing or disabled):
    # the rest of the call is reported with the same error instead of being tried.
    refuses_all: bool = False
    # About the queue or topic, not the message (see SendFailure.about_queue).
    about_queue: bool = True


_AUTHENTICATION = _Problem(
    "authentication failed: check the connection string or the identity's credentials",
    retryable=False,
    refuses_all=True,
)
_AUTHORIZATION = _Problem(
    "not authorized to send: the key or identity needs the Send right on the queue or topic",
    retryable=False,
    refuses_all=True,
)
_NOT_FOUND = _Problem("queue or topic not found", retryable=False, refuses_all=True)
_DISABLED = _Problem("queue or topic is disabled", retryable=False, refuses_all=True)
_UNRESOLVED = _Problem(
    "could not reach Service Bus (the namespace's host name could not be resolved)",
    retryable=True,
)
_CLOSED = _Problem(
    "the queue sender was closed; the push will be retried", retryable=True, about_queue=False
)


def _condition_of(exc: ServiceBusError) -> str | None:
    condition = getattr(exc, "_condition", None)
    if isinstance(condition, bytes):
        condition = condition.decode("ascii", "replace")
    if isinstance(condition, str) and _CONDITION.match(condition):
        return condition
    return None


def _classify(exc: Exception) -> _Problem:
    """Plain words and retryability for an error raised while sending.

    Checked by class first: the SDK marks authentication, authorization and disabled-entity
    errors as retryable for its own reconnect loop, but retrying them here only delays the
    inevitable until the configuration is fixed.
    """
    if isinstance(exc, ServiceBusConfigError):
        return _Problem(exc.reason, retryable=False, refuses_all=True)
    if isinstance(exc, ClientAuthenticationError):  # a token credential could not get a token
        return _AUTHENTICATION
    if not isinstance(exc, ServiceBusError):
        return _Problem(
            f"unexpected error while sending to Service Bus ({type(exc).__name__})",
            retryable=True,
        )
    if isinstance(getattr(exc, "inner_exception", None), ClientAuthenticationError):
        return _AUTHENTICATION
    if isinstance(exc, MessageSizeExceededError):
        return _Problem("message too large for the entity", retryable=False, about_queue=False)
    if isinstance(exc, ServiceBusAuthenticationError):
        return _AUTHENTICATION
    if isinstance(exc, ServiceBusAuthorizationError):
        return _AUTHORIZATION
    if isinstance(exc, MessagingEntityNotFoundError):
        return _NOT_FOUND
    if isinstance(exc, MessagingEntityDisabledError):
        return _DISABLED
    if isinstance(exc, ServiceBusQuotaExceededError):
        # The entity is full (or the namespace ran out of connections): it drains as the
        # vendor receives, so this is worth retrying even though the SDK does not.
        return _Problem("queue or topic is full or a Service Bus quota was exceeded", True)
    if isinstance(exc, ServiceBusServerBusyError):
        return _Problem("Service Bus is busy", retryable=True)
    if isinstance(exc, OperationTimeoutError):
        return _Problem("timed out waiting for Service Bus", retryable=True)
    if isinstance(exc, ServiceBusCommunicationError):
        return _Problem(
            "could not reach Service Bus (check the namespace name and the network)",
            retryable=True,
        )
    if isinstance(exc, ServiceBusConnectionError):
        return _Problem("the connection to Service Bus failed", retryable=True)
    retryable = bool(getattr(exc, "_retryable", False))  # set by the SDK per error condition
    condition = _condition_of(exc)
    detail = f" ({condition})" if condition else f" ({type(exc).__name__})"
    return _Problem(f"Service Bus refused the send{detail}", retryable=retryable)


class ServiceBusQueueSender:
    """Pushes outbox messages to one Service Bus queue or topic (see ``docs/queues.md``)."""

    def __init__(
        self,
        *,
        connection_string: str | None = None,
        namespace: str | None = None,
        queue_name: str | None = None,
        topic_name: str | None = None,
        client_factory: Callable[[], Any] | None = None,
        url_policy: UrlPolicy | None = None,
    ) -> None:
        """`url_policy`: the SSRF rules for the namespace host (None: none, for tests with a
        fake client; the factory always passes the settings' policy)."""
        if (queue_name is None) == (topic_name is None):
            raise ServiceBusConfigError("give exactly one of queue_name or topic_name")
        if connection_string is not None and namespace is not None:
            raise ServiceBusConfigError("give a connection string or a namespace, not both")
        if client_factory is None and connection_string is None and namespace is None:
            raise ServiceBusConfigError("give a connection string or a namespace")
        self._connection_string = connection_string
        self._namespace = namespace
        self._queue_name = queue_name
        self._topic_name = topic_name
        self._client_factory = client_factory
        self._url_policy = url_policy
        self._client: Any = None
        self._sender: Any = None
        self._credential: Any = None
        self._closed = False
        # The SDK's clients are not safe to share between concurrent coroutines.
        self._lock = asyncio.Lock()

    @classmethod
    def from_integration(
        cls,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
        url_policy: UrlPolicy | None = None,
    ) -> ServiceBusQueueSender:
        """Build from a stored integration: its ``config`` and its decrypted ``secrets``."""

        def text(value: Any) -> str | None:
            return value if isinstance(value, str) and value else None

        return cls(
            connection_string=text(secrets.get("connection_string")),
            namespace=text(config.get("namespace")),
            queue_name=text(config.get("queue_name")),
            topic_name=text(config.get("topic_name")),
            url_policy=url_policy,
        )

    @property
    def entity_kind(self) -> str:
        return "queue" if self._queue_name is not None else "topic"

    def __repr__(self) -> str:  # never the connection string
        entity = self._queue_name if self._queue_name is not None else self._topic_name
        return f"ServiceBusQueueSender({self.entity_kind}={entity!r})"

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        """Send ``messages``; return those that were not accepted (all others were)."""
        if not messages:
            return []
        async with self._lock:
            if self._closed:
                return _fail(messages, _CLOSED)
            return await self._send(messages)

    async def probe(self, body: bytes, message_id: str) -> None:
        """Send one message (a ``type: probe`` body); raise ``ServiceBusSendError`` if refused."""
        failures = await self.send_batch([OutgoingMessage(message_id, message_id, body)])
        if failures:
            raise ServiceBusSendError(failures[0].error, retryable=failures[0].retryable)

    async def aclose(self) -> None:
        """Close the sender, the client and any credential; safe to call more than once."""
        async with self._lock:
            self._closed = True
            sender, client, credential = self._sender, self._client, self._credential
            self._sender = self._client = self._credential = None
            for resource in (sender, client, credential):
                if resource is None:
                    continue
                try:
                    await resource.close()
                except Exception as exc:  # closing must go on for the others
                    log.warning("servicebus_close_error", error_type=type(exc).__name__)

    # -- internals ---------------------------------------------------------------------------

    def _build_client(self) -> Any:
        if self._client_factory is not None:
            return self._client_factory()
        if self._connection_string is not None:
            try:
                return ServiceBusClient.from_connection_string(self._connection_string)
            except (ValueError, TypeError):
                # The SDK's own text may quote parts of the string: never pass it on.
                raise ServiceBusConfigError("the connection string is malformed") from None
        try:
            from azure.identity.aio import DefaultAzureCredential
        except ImportError:
            raise ServiceBusConfigError(
                "namespace authentication needs the azure-identity package"
            ) from None
        credential = DefaultAzureCredential()
        client = ServiceBusClient(
            fully_qualified_namespace=str(self._namespace), credential=credential
        )
        self._credential = credential
        return client

    def _get_sender(self) -> Any:
        if self._sender is None:
            if self._client is None:
                self._client = self._build_client()
            if self._queue_name is not None:
                self._sender = self._client.get_queue_sender(queue_name=self._queue_name)
            else:
                self._sender = self._client.get_topic_sender(topic_name=self._topic_name)
        return self._sender

    def _endpoint(self) -> ServiceBusEndpoint | None:
        if self._connection_string is not None:
            return servicebus_endpoint(self._connection_string)
        if self._namespace is not None:
            return namespace_endpoint(self._namespace)
        return None

    async def _vet_endpoint(self) -> _Problem | None:
        """The namespace host as it resolves now, against the policy (before each push)."""
        endpoint = self._endpoint() if self._url_policy is not None else None
        if self._url_policy is None or endpoint is None:
            return None  # no policy (tests), or nothing to vet: the SDK refuses it itself
        try:
            await vet_servicebus_endpoint(endpoint, self._url_policy)
        except UnsafeUrlError as exc:
            log.warning("servicebus_endpoint_refused", entity_kind=self.entity_kind)
            return _Problem(f"namespace refused: {exc.reason}", retryable=False, refuses_all=True)
        except (HostResolutionError, TimeoutError):
            # A connected client keeps its vetted address; a new one could not connect.
            return _UNRESOLVED if self._client is None else None
        return None

    async def _send(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        failures: list[SendFailure] = []
        refused = await self._vet_endpoint()
        if refused is not None:
            return _fail(messages, refused)
        try:
            sender = self._get_sender()
            batch = await sender.create_message_batch()
        except Exception as exc:
            return _fail(messages, self._note(exc, len(messages)))
        pending: list[OutgoingMessage] = []
        for index, message in enumerate(messages):
            if self._try_add(batch, message):
                pending.append(message)
                continue
            if not pending:  # it does not fit even an empty batch: it never will
                failures.append(_too_large(message, batch.max_size_in_bytes))
                continue
            problem = await self._flush(sender, batch, pending)
            if problem is not None:
                failures.extend(_fail(pending, problem))
                if problem.refuses_all:
                    return failures + _fail(messages[index:], problem)
            pending = []
            try:
                batch = await sender.create_message_batch()
            except Exception as exc:
                return failures + _fail(messages[index:], self._note(exc, len(messages) - index))
            if self._try_add(batch, message):
                pending.append(message)
            else:
                failures.append(_too_large(message, batch.max_size_in_bytes))
        if pending:
            problem = await self._flush(sender, batch, pending)
            if problem is not None:
                failures.extend(_fail(pending, problem))
        return failures

    @staticmethod
    def _try_add(batch: Any, message: OutgoingMessage) -> bool:
        try:
            batch.add_message(_to_servicebus(message))
        except MessageSizeExceededError:
            return False
        return True

    async def _flush(
        self, sender: Any, batch: Any, pending: list[OutgoingMessage]
    ) -> _Problem | None:
        try:
            await sender.send_messages(batch)
        except Exception as exc:
            return self._note(exc, len(pending))
        return None

    def _note(self, exc: Exception, count: int) -> _Problem:
        problem = _classify(exc)
        log.warning(
            "servicebus_send_failed",
            entity_kind=self.entity_kind,
            error_type=type(exc).__name__,
            retryable=problem.retryable,
            messages=count,
        )
        return problem


def _to_servicebus(message: OutgoingMessage) -> ServiceBusMessage:
    return ServiceBusMessage(
        message.body,
        message_id=message.message_id,
        content_type=CONTENT_TYPE,
        application_properties={"schema": SCHEMA_NAME},
    )


def _fail(messages: Sequence[OutgoingMessage], problem: _Problem) -> list[SendFailure]:
    return [
        SendFailure(m.message_id, problem.error, problem.retryable, problem.about_queue)
        for m in messages
    ]


def _too_large(message: OutgoingMessage, max_bytes: int) -> SendFailure:
    return SendFailure(
        message.message_id,
        f"message too large for the entity (max {max_bytes} bytes)",
        retryable=False,
    )
