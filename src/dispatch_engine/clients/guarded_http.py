"""HTTP client for customer-supplied webhook URLs that enforces the SSRF rules at call time.

How the DNS-rebinding defence works: every call runs ``validate_url`` and ``resolve_safe``
and *pins* the host name to the vetted addresses. The httpx client uses a transport built on
an ``httpcore`` connection pool whose network backend only dials pinned addresses: the URL
keeps the real host name, so the Host header, TLS SNI and certificate checks all use the
original name, while the TCP connection goes to the IP that was checked, never to a second,
possibly different, DNS answer. A host that was not vetted by this client cannot be dialled.

This was chosen over requesting ``https://<ip>/`` with the ``sni_hostname`` extension because
the connection pool is keyed by URL origin: with IP URLs a TLS connection verified for one
host name could be reused for another host sharing the IP.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import typing
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType

import httpcore
import httpx

from dispatch_engine.security.ssrf import (
    GuardedHttpError,
    HostResolutionError,
    UnsafeUrlError,
    UrlPolicy,
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

# httpcore -> httpx exception types (most specific first is not needed: looked up by MRO).
_EXCEPTION_MAP: Mapping[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
}


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


@dataclass
class _HostSlot:
    semaphore: asyncio.Semaphore
    users: int = 0


@contextmanager
def _map_httpcore_errors() -> Iterator[None]:
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise _to_httpx(exc) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise _to_httpx(exc) from exc


def _to_httpx(exc: Exception) -> httpx.TransportError:
    for cls in type(exc).__mro__:
        target = _EXCEPTION_MAP.get(cls)
        if target is not None:
            return target(str(exc))
    return httpx.TransportError(str(exc))


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Network backend that dials only addresses pinned for a host by a vetted resolution."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._pins: dict[str, tuple[str, ...]] = {}

    def pin(self, host: str, addresses: Iterable[str]) -> None:
        """Record the vetted addresses for ``host`` (latest resolution wins)."""
        self._pins[host.lower()] = tuple(addresses)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self._pins.get(host.lower())
        if not addresses:
            raise httpcore.ConnectError("refusing to connect to a host that was not vetted")
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _map_httpcore_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


class _PinnedTransport(httpx.AsyncBaseTransport):
    """httpx transport over an httpcore pool that uses :class:`_PinnedBackend`."""

    def __init__(
        self, backend: _PinnedBackend, ssl_context: ssl.SSLContext, max_connections: int = 100
    ) -> None:
        # Keep as many idle connections as may be busy: a webhook answering a batch of
        # checks is asked again at once, and reconnecting each time costs more than the call.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = typing.cast(AsyncIterable[bytes], request.stream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=stream,
            extensions=request.extensions,
        )
        with _map_httpcore_errors():
            core_response = await self._pool.handle_async_request(core_request)
        body = typing.cast(AsyncIterable[bytes], core_response.stream)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(body),
            extensions=core_response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _describe(url: httpx.URL) -> str:
    """Origin only: paths and query strings of webhook URLs often carry tokens."""
    port = f":{url.port}" if url.port is not None else ""
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}{port}"


class GuardedHttpClient:
    """POSTs JSON to customer URLs with SSRF checks, pinned DNS, timeouts and size caps.

    Redirects are never followed. Concurrency is bounded per host name. The body returned is
    the raw (not content-decoded) bytes; ``Accept-Encoding: identity`` is requested so that a
    compressed bomb cannot expand past the cap.
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
        dripping bytes cannot hold a call open forever; ``ssl_context`` is for private CAs."""
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
        self._slots: dict[str, _HostSlot] = {}
        self._backend = _PinnedBackend()
        context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._client = httpx.AsyncClient(
            transport=_PinnedTransport(
                self._backend, context, max_connections=max_concurrency_per_host
            ),
            follow_redirects=False,
            # Ignore HTTP(S)_PROXY etc.: a proxy would do its own, unvetted DNS resolution.
            trust_env=False,
            # Never keep cookies from one customer's endpoint for the next call.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=read_timeout,
                write=read_timeout,
                pool=connect_timeout,
            ),
        )

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
        """Close pooled connections."""
        await self._client.aclose()

    @asynccontextmanager
    async def _host_slot(self, host: str) -> AsyncIterator[None]:
        """Hold one of the host's concurrency slots; idle hosts are dropped from the dict."""
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

    async def post_json(self, url: str, payload: Mapping[str, object]) -> GuardedResponse:
        """POST ``payload`` as JSON to ``url`` and return the (unfollowed) answer.

        Raises UnsafeUrlError before any connection when the URL or any resolved address is
        not allowed; UpstreamTimeout, UpstreamUnavailable or ResponseTooLarge otherwise.
        """
        safe_url = httpx.URL(validate_url(url, self._policy))
        host = safe_url.raw_host.decode("ascii").lower()
        port = safe_url.port or (443 if safe_url.scheme == "https" else 80)
        origin = _describe(safe_url)
        content = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        async with self._host_slot(host):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self._total_timeout):
                    try:
                        async with asyncio.timeout(self._connect_timeout):
                            addresses = await resolve_safe(host, port, self._policy)
                    except HostResolutionError:
                        raise UpstreamUnavailable(
                            f"host of {origin} could not be resolved"
                        ) from None
                    self._backend.pin(host, addresses)
                    request = self._client.build_request(
                        "POST", safe_url, content=content, headers=headers
                    )
                    response = await self._client.send(request, stream=True)
                    try:
                        body = await self._read_capped(response, origin)
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise UpstreamTimeout(f"request to {origin} timed out") from None
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout(
                    f"request to {origin} timed out ({type(exc).__name__})"
                ) from exc
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(
                    f"request to {origin} failed ({type(exc).__name__})"
                ) from exc
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return GuardedResponse(status_code=response.status_code, body=body, elapsed_ms=elapsed_ms)

    async def _read_capped(self, response: httpx.Response, origin: str) -> bytes:
        limit = self._max_response_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise ResponseTooLarge(f"response from {origin} exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"response from {origin} exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
