"""SSRF rules for the hosts queue senders connect to: an SQS ``endpoint_url`` and a Service
Bus namespace (``namespace`` or the connection string's endpoint).

These hosts come from an API request, so they get the same rules as the webhooks
(``security/ssrf.py``, the one :class:`UrlPolicy` built from the settings): https only unless
plain http is allowed (never in production), no private, loopback, link-local or metadata
address unless allow-listed. They are checked when the integration is stored (static:
spelling, IP literals, loopback names) and again when a sender connects (the host name is
resolved and every address vetted, so a DNS answer changed since then is caught):

* SQS: :class:`VettingResolver` is the resolver of aiobotocore's connection pool, so every
  new connection goes to an address vetted at that moment (DNS rebinding included);
* Service Bus: the SDK opens its own AMQP connections and cannot be given a resolver, so the
  host is resolved and vetted before each push; the SDK resolves it again when it connects,
  a window of milliseconds (documented in docs/queues.md).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from dispatch_engine.security.ssrf import (
    UnsafeUrlError,
    UrlPolicy,
    parse_ip_literal,
    resolve_results,
    resolve_safe,
    validate_url,
)

__all__ = [
    "SERVICE_BUS_PORT",
    "ForbiddenAddressError",
    "ServiceBusEndpoint",
    "VettingResolver",
    "check_servicebus_endpoint",
    "namespace_endpoint",
    "servicebus_endpoint",
    "vet_servicebus_endpoint",
    "vet_url",
]

SERVICE_BUS_PORT = 5671  # AMQP over TLS
RESOLVE_TIMEOUT_SECONDS = 5.0


class ForbiddenAddressError(OSError):
    """A connection was refused because its host resolved to a forbidden address.

    An ``OSError``, so HTTP clients report it as a failed connection; ``reason`` is safe to
    show (it names the address and the rule, never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def vet_url(url: str, policy: UrlPolicy, *, default_port: int | None = None) -> None:
    """Static checks, then resolve the host now and vet every address.

    Raises :class:`UnsafeUrlError` when the URL or an address is refused and
    ``HostResolutionError`` when the name does not resolve."""
    parts = urlsplit(validate_url(url, policy))
    host = parts.hostname or ""
    if parse_ip_literal(host) is not None:
        return  # an IP literal was vetted by validate_url
    port = parts.port or default_port or (443 if parts.scheme == "https" else 80)
    async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
        await resolve_safe(host, port, policy)


@dataclass(frozen=True)
class ServiceBusEndpoint:
    netloc: str  # host[:port] as the connection string gives it
    plaintext: bool  # UseDevelopmentEmulator=true: plain AMQP, no TLS

    @property
    def as_url(self) -> str:
        """The host as an https URL, for the URL rules (AMQP runs over TLS)."""
        return f"https://{self.netloc}/"


def servicebus_endpoint(connection_string: str) -> ServiceBusEndpoint | None:
    """Where a connection string makes the SDK connect, read as the SDK reads it
    (azure.servicebus ``_parse_conn_str``: keys in any case, the last ``Endpoint`` or
    ``HostName`` wins). None when there is no endpoint (the SDK refuses it too)."""
    endpoint: str | None = None
    emulator: str | None = None
    for part in connection_string.strip().rstrip(";").split(";"):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        if key.lower() in ("endpoint", "hostname"):
            endpoint = value.rstrip("/")
        elif key.lower() == "usedevelopmentemulator":
            emulator = value
    netloc = urlsplit(endpoint).netloc.strip() if endpoint else ""
    if not netloc:
        return None
    return ServiceBusEndpoint(netloc=netloc, plaintext=emulator == "true")


def namespace_endpoint(namespace: str) -> ServiceBusEndpoint:
    """The endpoint of a fully qualified namespace (Microsoft Entra ID authentication)."""
    return ServiceBusEndpoint(netloc=namespace.strip(), plaintext=False)


def check_servicebus_endpoint(endpoint: ServiceBusEndpoint, policy: UrlPolicy) -> None:
    """Static checks; raises :class:`UnsafeUrlError`. The development emulator's plain AMQP
    counts as plain http."""
    if endpoint.plaintext and not policy.allow_http:
        raise UnsafeUrlError("the development emulator (plain AMQP, no TLS) is not allowed")
    validate_url(endpoint.as_url, policy)


async def vet_servicebus_endpoint(endpoint: ServiceBusEndpoint, policy: UrlPolicy) -> None:
    """Static checks, then resolve now and vet every address (see :func:`vet_url`)."""
    check_servicebus_endpoint(endpoint, policy)
    await vet_url(endpoint.as_url, policy, default_port=SERVICE_BUS_PORT)


class VettingResolver(AbstractResolver):
    """aiohttp resolver that vets every answer with :func:`resolve_safe` (DNS rebinding).

    aiohttp does not ask a resolver about IP-literal hosts: those are vetted statically
    before the client is created. Use with ``use_dns_cache=False`` so that every new
    connection asks again."""

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await resolve_safe(host, port, self._policy)
        except UnsafeUrlError as exc:
            raise ForbiddenAddressError(exc.reason) from None
        results = resolve_results(host, port, family, addresses)
        if not results:
            raise OSError("no vetted address of the requested address family")
        return results

    async def close(self) -> None:
        """Nothing to release."""
