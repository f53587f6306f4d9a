"""HTTP client for customer-supplied webhook URLs that enforces the SSRF rules at call time.

The transport is aiohttp (a keep-alive connection pool; about ten times the throughput of
the previous httpx transport on a two-core machine).

How the DNS-rebinding defence works: a URL's static checks (``validate_url``: scheme,
credentials, port, host spelling, IP literals against the policy) are made once per URL and
remembered, since neither the URL nor the policy changes; a host *name* is resolved with
``resolve_safe`` on every call, and the host is *pinned* to the addresses vetted then. The
aiohttp connector has no resolver of its own: it is given :class:`_PinnedResolver`, which
answers only with the addresses pinned by the last vetted resolution for that host and
refuses any host that was not vetted (its DNS cache is off, so it asks every time it opens a
connection). The URL keeps the real host name, so the Host header, TLS SNI and certificate
checks all use the original name, while the TCP connection goes to an IP that was checked,
never to a second, possibly different, DNS answer. IP-literal URLs never reach the
resolver: their address was vetted with the URL.

The connection pool is keyed by host name (not by IP), so a TLS connection verified for one
host name is never reused for another host that shares the IP. A pooled connection opened
for a host may be reused by a later call for the same host: its address was vetted when it
was opened, and the address rules do not change over time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from dispatch_engine.security.ssrf import (
    GuardedHttpError,
    HostResolutionError,
    UnsafeUrlError,
    UrlPolicy,
    parse_ip_literal,
    resolve_results,
    resolve_safe,
    validate_url,
)

__all__ = [
    "GuardedHttpClient",
    "GuardedHttpError",
    "GuardedResponse",
    "ResponseTooLarge",
    "UnsafeUrlError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]

USER_AGENT = "dispatch-engine-webhook/1"

# Idle keep-alive connections are dropped a little before the common 5 s server default, so
# that a request is rarely written on a connection the server is closing at that moment.
KEEPALIVE_SECONDS = 4.0
# Floor of the connector's overall connection limit. Per-host concurrency is bounded by the
# client's semaphores; this only caps the total across hosts (file descriptors).
MIN_CONNECTION_LIMIT = 256
# URLs whose static checks are remembered per client (a policy's few webhook URLs, many
# times a second); past this many distinct URLs the memory starts afresh.
MAX_VETTED_URLS = 1024


class ResponseTooLarge(GuardedHttpError):
    """The response body exceeded ``max_response_bytes``."""


class UpstreamTimeout(GuardedHttpError):
    """Resolving, connecting to or reading from the upstream took too long."""


class UpstreamUnavailable(GuardedHttpError):
    """The upstream could not be reached or did not speak valid HTTP."""


@dataclass(frozen=True)
class GuardedResponse:
    """Status and (undecoded, size-capped) body of an upstream answer; 3xx is not followed."""

    status_code: int
    body: bytes
    elapsed_ms: float

    @property
    def is_success(self) -> bool:
        """True for 2xx answers (callers treat anything else, including 3xx, as failure)."""
        return 200 <= self.status_code < 300


@dataclass(frozen=True)
class _Target:
    """A URL that passed the static checks, parsed once.

    ``addresses`` is set for IP-literal hosts, whose address was vetted with the URL and
    cannot change; a host name has None and is resolved (and vetted) again on every call.
    """

    url: URL
    host: str
    port: int
    origin: str
    addresses: tuple[str, ...] | None


@dataclass
class _HostSlot:
    semaphore: asyncio.Semaphore
    users: int = 0


class _UnvettedHostError(OSError):
    """The connector asked for a host that has no vetted resolution pinned."""


def _pin_key(host: str) -> str:
    return host.rstrip(".").lower()


class _PinnedResolver(AbstractResolver):
    """aiohttp resolver that answers only from addresses pinned by a vetted resolution.

    It never performs a DNS lookup itself: a host without pinned addresses is refused.
    """

    def __init__(self) -> None:
        self._pins: dict[str, tuple[str, ...]] = {}

    def pin(self, host: str, addresses: Iterable[str]) -> None:
        """Record the vetted addresses for ``host`` (latest resolution wins)."""
        self._pins[_pin_key(host)] = tuple(addresses)

    def unpin(self, host: str) -> None:
        """Forget ``host``: it is refused until it is vetted again."""
        self._pins.pop(_pin_key(host), None)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._pins.get(_pin_key(host))
        if not addresses:
            raise _UnvettedHostError("refusing to connect to a host that was not vetted")
        results = resolve_results(host, port, family, addresses)
        if not results:
            raise _UnvettedHostError("no vetted address of the requested address family")
        return results

    async def close(self) -> None:
        """Nothing to release."""


def _describe(url: URL) -> str:
    """Origin only: paths and query strings of webhook URLs often carry tokens."""
    port = f":{url.explicit_port}" if url.explicit_port is not None else ""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}{port}"


class GuardedHttpClient:
    """POSTs JSON to customer URLs with SSRF checks, pinned DNS, timeouts and size caps.

    Redirects are never followed. Concurrency is bounded per host name. The body returned is
    the raw (not content-decoded) bytes; ``Accept-Encoding: identity`` is requested so that a
    compressed bomb cannot expand past the cap.

    The client may be built outside an event loop: its aiohttp session is created by the
    first call, inside the running loop, and is bound to that loop from then on.
    """

    def __init__(
        self,
        policy: UrlPolicy,
        connect_timeout: float,
        read_timeout: float,
        max_response_bytes: int,
        max_concurrency_per_host: int,
        *,
        total_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``total_timeout`` caps a whole call (default ``connect + 2 * read``) so a server
        dripping bytes cannot hold a call open forever; ``ssl_context`` is for private CAs
        (the default verifies against the system trust store)."""
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_response_bytes < 0:
            raise ValueError("max_response_bytes must not be negative")
        if max_concurrency_per_host < 1:
            raise ValueError("max_concurrency_per_host must be at least 1")
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = (
            total_timeout if total_timeout is not None else connect_timeout + 2 * read_timeout
        )
        self._max_response_bytes = max_response_bytes
        self._max_concurrency = max_concurrency_per_host
        self._connection_limit = max(MIN_CONNECTION_LIMIT, 4 * max_concurrency_per_host)
        self._slots: dict[str, _HostSlot] = {}
        self._targets: dict[str, _Target] = {}
        self._resolver = _PinnedResolver()
        self._ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def __aenter__(self) -> GuardedHttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections; the client cannot be used afterwards."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        """The aiohttp session, created on first use inside the running loop."""
        if self._closed:
            raise RuntimeError("the guarded HTTP client has been closed")
        loop = asyncio.get_running_loop()
        if self._session is not None:
            if self._loop is not loop:
                raise RuntimeError("the guarded HTTP client is bound to another event loop")
            return self._session
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            # Every new connection must ask the pinned resolver, never a cached answer.
            use_dns_cache=False,
            ssl=self._ssl_context,
            # Per-host concurrency is bounded by the semaphores of ``_host_slot``.
            limit=self._connection_limit,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Ignore HTTP(S)_PROXY, .netrc etc.: a proxy would do its own, unvetted DNS lookup.
            trust_env=False,
            # Never keep cookies from one customer's endpoint for the next call.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Raw bytes: a compressed body must not expand past the size cap.
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None,  # enforced around the whole call, DNS included, in post_json
                connect=self._connect_timeout,
                sock_connect=self._connect_timeout,
                sock_read=self._read_timeout,
            ),
        )
        self._loop = loop
        return self._session

    @asynccontextmanager
    async def _host_slot(self, host: str) -> AsyncIterator[None]:
        """Hold one of the host's concurrency slots; idle hosts are dropped from the dict.

        When no call for the host is left, its pinned addresses are dropped too: the
        resolver then refuses the host until a call vets it again.
        """
        slot = self._slots.get(host)
        if slot is None:
            slot = _HostSlot(asyncio.Semaphore(self._max_concurrency))
            self._slots[host] = slot
        slot.users += 1
        try:
            async with slot.semaphore:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[host]
                self._resolver.unpin(host)

    async def post_json(self, url: str, payload: Mapping[str, object]) -> GuardedResponse:
        """POST ``payload`` as JSON to ``url`` and return the (unfollowed) answer.

        Raises UnsafeUrlError before any connection when the URL or any resolved address is
        not allowed; UpstreamTimeout, UpstreamUnavailable or ResponseTooLarge otherwise.
        """
        target = self._target(url)
        host, origin = target.host, target.origin
        content = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        session = self._get_session()
        async with self._host_slot(host):
            started = time.perf_counter()
            # Exceptions are re-raised "from None": aiohttp's messages (ClientResponseError)
            # quote the full URL, and a chained cause would put it in logged tracebacks.
            try:
                async with asyncio.timeout(self._total_timeout):
                    if target.addresses is None:
                        self._resolver.pin(host, await self._resolve(target))
                    response = await session.post(
                        target.url, data=content, headers=headers, allow_redirects=False
                    )
                    try:
                        body = await self._read_capped(response, origin)
                    except BaseException:
                        response.close()  # drop the connection: the body was not drained
                        raise
                    response.release()
            except TimeoutError as exc:  # aiohttp's ServerTimeoutError is a TimeoutError
                detail = "" if type(exc) is TimeoutError else f" ({type(exc).__name__})"
                raise UpstreamTimeout(f"request to {origin} timed out{detail}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamUnavailable(
                    f"request to {origin} failed ({type(exc).__name__})"
                ) from None
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return GuardedResponse(status_code=response.status, body=body, elapsed_ms=elapsed_ms)

    def _target(self, url: str) -> _Target:
        """The URL's static SSRF checks and parsing, done once per URL (the policy is fixed).

        Raises UnsafeUrlError when the URL is refused; refusals are not remembered.
        """
        target = self._targets.get(url)
        if target is not None:
            return target
        try:
            safe_url = URL(validate_url(url, self._policy))
        except UnsafeUrlError:
            raise
        except ValueError:
            raise UnsafeUrlError("malformed URL") from None
        host = (safe_url.raw_host or "").lower()
        if not host:
            raise UnsafeUrlError("URL has no host")
        literal = parse_ip_literal(host)  # validate_url has vetted it against the policy
        target = _Target(
            url=safe_url,
            host=host,
            port=safe_url.port or (443 if safe_url.scheme == "https" else 80),
            origin=_describe(safe_url),
            addresses=None if literal is None else (str(literal),),
        )
        if len(self._targets) >= MAX_VETTED_URLS:
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _resolve(self, target: _Target) -> list[str]:
        """Resolve a host name now and vet every address (the DNS-rebinding defence)."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await resolve_safe(target.host, target.port, self._policy)
        except HostResolutionError:
            raise UpstreamUnavailable(f"host of {target.origin} could not be resolved") from None

    async def _read_capped(self, response: aiohttp.ClientResponse, origin: str) -> bytes:
        limit = self._max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise ResponseTooLarge(f"response from {origin} exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"response from {origin} exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
