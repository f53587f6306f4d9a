"""Guarded webhook client against real loopback servers (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dispatch_engine.clients import guarded_http
from dispatch_engine.clients.guarded_http import (
    GuardedHttpClient,
    GuardedHttpError,
    GuardedResponse,
    ResponseTooLarge,
    UnsafeUrlError,
    UpstreamTimeout,
    UpstreamUnavailable,
    _PinnedResolver,
)
from dispatch_engine.security.ssrf import UrlPolicy
from tests.net import (
    LOOPBACK,
    AsgiApp,
    Receive,
    Scope,
    Send,
    free_socket,
    read_body,
    respond,
    serve,
    wait_for_disconnect,
)

LOOPBACK_POLICY = UrlPolicy(allow_http=True, allowlist=("127.0.0.1/32",))
GARBAGE = bytes(range(256)) * 4
BIG = 1024 * 1024
LIMIT = 64 * 1024


@dataclass
class Recorded:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ServerState:
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, item: Recorded) -> None:
        with self.lock:
            self.requests.append(item)

    def paths(self) -> list[str]:
        with self.lock:
            return [item.path for item in self.requests]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.in_flight = 0
            self.max_in_flight = 0


def make_app(state: ServerState) -> AsgiApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        state.record(Recorded(path, scope["query_string"].decode(), headers, body))
        try:
            if path == "/ok":
                reply = {"received": json.loads(body or b"null")}
                await respond(send, 200, json.dumps(reply).encode())
            elif path == "/slow":
                await wait_for_disconnect(receive, 5.0)
                await respond(send, 200, b"{}")
            elif path == "/error":
                await respond(send, 500, b'{"error": "boom"}')
            elif path == "/redirect":
                await respond(send, 302, b"", [(b"location", b"/ok")])
            elif path == "/big":
                await respond(send, 200, b"x" * BIG)
            elif path == "/big-chunked":
                start = {"type": "http.response.start", "status": 200, "headers": []}
                await send(start)
                for _ in range(BIG // 16384):
                    await send(
                        {"type": "http.response.body", "body": b"y" * 16384, "more_body": True}
                    )
                await send({"type": "http.response.body", "body": b""})
            elif path == "/garbage":
                await respond(send, 200, GARBAGE)
            elif path == "/gzip":
                await respond(
                    send, 200, gzip.compress(b"z" * 10_000), [(b"content-encoding", b"gzip")]
                )
            elif path == "/cookie":
                await respond(send, 200, b"{}", [(b"set-cookie", b"session=abc; Path=/")])
            elif path == "/drip":
                gone = asyncio.create_task(wait_for_disconnect(receive, 5.0))
                await send({"type": "http.response.start", "status": 200, "headers": []})
                try:
                    for _ in range(30):
                        if gone.done():
                            return
                        chunk = {"type": "http.response.body", "body": b".", "more_body": True}
                        await send(chunk)
                        await asyncio.sleep(0.1)
                    await send({"type": "http.response.body", "body": b""})
                finally:
                    gone.cancel()
            elif path == "/concurrency":
                with state.lock:
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                await asyncio.sleep(0.15)
                with state.lock:
                    state.in_flight -= 1
                await respond(send, 200, b"{}")
            else:
                await respond(send, 404, b"{}")
        except OSError:
            pass  # client went away (timeouts, size caps): expected in these tests

    return app


@dataclass
class RunningServer:
    port: int
    state: ServerState

    def url(self, path: str, scheme: str = "http", host: str = LOOPBACK) -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def _run_server(
    state: ServerState, certfile: Path | None = None, keyfile: Path | None = None
) -> Iterator[RunningServer]:
    with serve(make_app(state), certfile, keyfile) as port:
        yield RunningServer(port, state)


@pytest.fixture(scope="module")
def http_server() -> Iterator[RunningServer]:
    yield from _run_server(ServerState())


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Self-signed certificate valid only for the name 'pinned.example'."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinned.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("pinned.example")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@pytest.fixture(scope="module")
def tls_server(tls_files: tuple[Path, Path]) -> Iterator[RunningServer]:
    yield from _run_server(ServerState(), *tls_files)


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    for name in ("http_server", "tls_server"):
        if name in request.fixturenames:
            request.getfixturevalue(name).state.reset()


def make_client(policy: UrlPolicy = LOOPBACK_POLICY, **overrides: Any) -> GuardedHttpClient:
    options: dict[str, Any] = {
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "max_response_bytes": LIMIT,
        "max_concurrency_per_host": 4,
    }
    options.update(overrides)
    return GuardedHttpClient(policy, **options)


@pytest.fixture
async def client() -> AsyncIterator[GuardedHttpClient]:
    async with make_client() as guarded:
        yield guarded


FakeAnswers = dict[str, list[str]]


def fake_dns(
    monkeypatch: pytest.MonkeyPatch, answers: Callable[[str], list[str] | None]
) -> list[str]:
    """Answer chosen names from ``answers``; every other lookup goes to the real resolver.

    Returns the list of every host name looked up, so tests can see who resolved what.
    """
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    calls: list[str] = []

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        calls.append(name)
        chosen = answers(name)
        if chosen is None:
            return await real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))
            for ip in chosen
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return calls


# --- happy paths -------------------------------------------------------------------------


async def test_post_json_round_trip(client: GuardedHttpClient, http_server: RunningServer) -> None:
    response = await client.post_json(http_server.url("/ok"), {"dnd": True, "name": "Zoë"})
    assert isinstance(response, GuardedResponse)
    assert response.status_code == 200
    assert response.is_success
    assert json.loads(response.body) == {"received": {"dnd": True, "name": "Zoë"}}
    assert response.elapsed_ms > 0
    [seen] = http_server.state.requests
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.headers["host"] == f"{LOOPBACK}:{http_server.port}"
    assert json.loads(seen.body) == {"dnd": True, "name": "Zoë"}


async def test_server_error_is_returned_not_raised(
    client: GuardedHttpClient, http_server: RunningServer
) -> None:
    response = await client.post_json(http_server.url("/error"), {})
    assert response.status_code == 500
    assert not response.is_success
    assert json.loads(response.body) == {"error": "boom"}


async def test_redirect_is_not_followed(
    client: GuardedHttpClient, http_server: RunningServer
) -> None:
    response = await client.post_json(http_server.url("/redirect"), {"a": 1})
    assert response.status_code == 302
    assert not response.is_success
    assert http_server.state.paths() == ["/redirect"]


async def test_garbage_body_is_returned_as_bytes(
    client: GuardedHttpClient, http_server: RunningServer
) -> None:
    response = await client.post_json(http_server.url("/garbage"), {})
    assert response.status_code == 200
    assert response.body == GARBAGE


async def test_compressed_body_is_not_decoded(
    client: GuardedHttpClient, http_server: RunningServer
) -> None:
    response = await client.post_json(http_server.url("/gzip"), {})
    assert gzip.decompress(response.body) == b"z" * 10_000


async def test_cookies_are_not_kept(client: GuardedHttpClient, http_server: RunningServer) -> None:
    await client.post_json(http_server.url("/cookie"), {})
    await client.post_json(http_server.url("/ok"), {})
    assert "cookie" not in http_server.state.requests[-1].headers


# --- refusals before any connection ------------------------------------------------------


async def test_loopback_refused_without_allowlist_before_connecting(
    http_server: RunningServer,
) -> None:
    async with make_client(UrlPolicy(allow_http=True)) as guarded:
        with pytest.raises(UnsafeUrlError) as info:
            await guarded.post_json(http_server.url("/ok"), {"x": 1})
    assert "loopback" in info.value.reason
    assert http_server.state.requests == []


async def test_refusals_make_no_tcp_connection() -> None:
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    listener = await asyncio.start_server(on_connect, LOOPBACK, 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with make_client(UrlPolicy(allow_http=True)) as guarded:
            for url in (
                f"http://127.0.0.1:{port}/",
                f"http://2130706433:{port}/",
                f"http://0x7f.1:{port}/",
                f"http://[::ffff:127.0.0.1]:{port}/",
                f"http://localhost:{port}/",
                f"http://user:pw@127.0.0.1:{port}/",
            ):
                with pytest.raises(UnsafeUrlError):
                    await guarded.post_json(url, {})
        async with make_client(UrlPolicy(allowlist=("127.0.0.1/32",))) as guarded:
            with pytest.raises(UnsafeUrlError, match="https is required"):
                await guarded.post_json(f"http://127.0.0.1:{port}/", {})
        await asyncio.sleep(0.05)
        assert accepted == []
    finally:
        listener.close()
        await listener.wait_closed()


async def test_dns_answer_to_forbidden_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, http_server: RunningServer
) -> None:
    # 127.0.0.2 is loopback too, but outside the 127.0.0.1/32 allow-list.
    fake_dns(monkeypatch, lambda name: ["127.0.0.2"] if name == "hook.example" else None)
    async with make_client() as guarded:
        with pytest.raises(UnsafeUrlError, match=r"127\.0\.0\.2 is loopback"):
            await guarded.post_json(f"http://hook.example:{http_server.port}/ok", {})
    assert http_server.state.requests == []


# --- pinning (DNS rebinding defence) -----------------------------------------------------


async def test_connects_to_vetted_address_with_original_host_header(
    monkeypatch: pytest.MonkeyPatch, http_server: RunningServer
) -> None:
    calls = fake_dns(monkeypatch, lambda name: [LOOPBACK] if name == "hook.example" else None)
    async with make_client() as guarded:
        response = await guarded.post_json(f"http://Hook.Example:{http_server.port}/ok", {})
    assert response.status_code == 200
    assert http_server.state.requests[0].headers["host"] == f"hook.example:{http_server.port}"
    # Resolved exactly once, by the guard; the socket layer only ever saw the IP.
    assert calls.count("hook.example") == 1
    assert set(calls) <= {"hook.example", LOOPBACK}


async def test_rebinding_to_forbidden_address_is_caught_per_call(
    monkeypatch: pytest.MonkeyPatch, http_server: RunningServer
) -> None:
    answers = iter([[LOOPBACK], ["127.0.0.2"]])
    fake_dns(monkeypatch, lambda name: next(answers) if name == "rebind.example" else None)
    async with make_client() as guarded:
        url = f"http://rebind.example:{http_server.port}/ok"
        assert (await guarded.post_json(url, {})).status_code == 200
        with pytest.raises(UnsafeUrlError):
            await guarded.post_json(url, {})
    assert http_server.state.paths() == ["/ok"]


async def test_ip_literal_url_is_vetted_once_and_never_looked_up(
    monkeypatch: pytest.MonkeyPatch, http_server: RunningServer
) -> None:
    calls = fake_dns(monkeypatch, lambda name: [LOOPBACK])
    async with make_client() as guarded:
        url = f"http://127.0.0.1:{http_server.port}/ok"
        for _ in range(3):
            assert (await guarded.post_json(url, {})).status_code == 200
    assert calls == []
    assert http_server.state.paths() == ["/ok"] * 3


async def test_refused_url_stays_refused_on_every_call(http_server: RunningServer) -> None:
    # Only URLs that passed are remembered: a refusal is decided afresh each time.
    async with make_client(UrlPolicy(allow_http=True)) as guarded:
        url = f"http://127.0.0.1:{http_server.port}/ok"
        for _ in range(2):
            with pytest.raises(UnsafeUrlError, match="loopback"):
                await guarded.post_json(url, {})
    assert http_server.state.requests == []


async def test_remembered_urls_are_bounded(
    monkeypatch: pytest.MonkeyPatch, http_server: RunningServer
) -> None:
    monkeypatch.setattr(guarded_http, "MAX_VETTED_URLS", 4)
    async with make_client() as guarded:
        for index in range(10):
            url = f"http://127.0.0.1:{http_server.port}/ok?n={index}"
            assert (await guarded.post_json(url, {})).status_code == 200
            assert len(guarded._targets) <= 4
    assert len(http_server.state.requests) == 10


async def test_resolver_never_answers_for_unvetted_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Even a name the system resolver would answer is refused until it is pinned.
    calls = fake_dns(monkeypatch, lambda name: [LOOPBACK])
    resolver = _PinnedResolver()
    with pytest.raises(OSError, match="not vetted"):
        await resolver.resolve("unvetted.example", 80)
    resolver.pin("Vetted.Example", ["127.0.0.1", "::1"])
    answers = await resolver.resolve("vetted.example", 80, family=socket.AF_UNSPEC)
    assert [(a["host"], a["port"], a["hostname"]) for a in answers] == [
        ("127.0.0.1", 80, "vetted.example"),
        ("::1", 80, "vetted.example"),
    ]
    only_v4 = await resolver.resolve("vetted.example", 80, family=socket.AF_INET)
    assert [a["host"] for a in only_v4] == ["127.0.0.1"]
    with pytest.raises(OSError, match="not vetted"):
        await resolver.resolve("other.example", 80)
    resolver.unpin("vetted.example")
    with pytest.raises(OSError, match="not vetted"):
        await resolver.resolve("vetted.example", 80)
    assert calls == []


async def test_connector_refuses_unvetted_host_without_connecting(
    monkeypatch: pytest.MonkeyPatch, http_server: RunningServer
) -> None:
    """The client's own connection pool cannot reach a host no call has vetted."""
    calls = fake_dns(monkeypatch, lambda name: [LOOPBACK] if name.endswith(".example") else None)
    async with make_client() as guarded:
        assert await guarded.post_json(f"http://vetted.example:{http_server.port}/ok", {})
        session = guarded._get_session()
        with pytest.raises(aiohttp.ClientConnectorDNSError):
            await session.post(f"http://unvetted.example:{http_server.port}/ok", data=b"{}")
        # The pin ends with the last call for the host: no new connection until vetted again.
        with pytest.raises(OSError, match="not vetted"):
            await guarded._resolver.resolve("vetted.example", http_server.port)
    assert http_server.state.paths() == ["/ok"]
    assert calls == ["vetted.example"]


async def test_dns_change_between_calls_dials_only_the_new_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two listeners on one port at 127.0.0.1 and 127.0.0.3; DNS moves from one to the other.

    The listeners answer ``Connection: close`` so that the second call must dial again.
    """
    hits: list[str] = []

    def handler(name: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            hits.append(name)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
            writer.close()

        return on_connect

    first = await asyncio.start_server(handler("first"), LOOPBACK, 0)
    port = first.sockets[0].getsockname()[1]
    second = await asyncio.start_server(handler("second"), "127.0.0.3", port)
    answers = iter([[LOOPBACK], ["127.0.0.3"], ["127.0.0.3"]])
    fake_dns(monkeypatch, lambda name: next(answers) if name == "moving.example" else None)
    policy = UrlPolicy(allow_http=True, allowlist=("127.0.0.1/32", "127.0.0.3/32"))
    try:
        async with make_client(policy) as guarded:
            url = f"http://moving.example:{port}/hook"
            assert (await guarded.post_json(url, {})).status_code == 200
            assert hits == ["first"]
            assert (await guarded.post_json(url, {})).status_code == 200
            assert (await guarded.post_json(url, {})).status_code == 200
        assert hits == ["first", "second", "second"]
    finally:
        for listener in (first, second):
            listener.close()
            await listener.wait_closed()


async def keep_alive_listener(
    connections: list[int],
) -> tuple[asyncio.Server, int]:
    """A raw HTTP/1.1 server that serves many requests per connection and counts connections."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(on_connect, LOOPBACK, 0)
    return listener, listener.sockets[0].getsockname()[1]


async def test_keep_alive_connections_are_reused() -> None:
    connections: list[int] = []
    listener, port = await keep_alive_listener(connections)
    try:
        async with make_client() as guarded:
            for _ in range(5):
                assert (await guarded.post_json(f"http://127.0.0.1:{port}/", {})).body == b"{}"
            assert len(connections) == 1
            results = await asyncio.gather(
                *(guarded.post_json(f"http://127.0.0.1:{port}/", {}) for _ in range(8))
            )
            assert [r.status_code for r in results] == [200] * 8
            assert len(connections) <= 4  # max_concurrency_per_host
    finally:
        listener.close()
        await listener.wait_closed()


async def test_oversized_body_connection_is_not_reused(http_server: RunningServer) -> None:
    async with make_client() as guarded:
        with pytest.raises(ResponseTooLarge):
            await guarded.post_json(http_server.url("/big-chunked"), {})
        # The undrained connection was dropped; the next call still gets a clean answer.
        response = await guarded.post_json(http_server.url("/ok"), {"n": 1})
    assert json.loads(response.body) == {"received": {"n": 1}}


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("garbage", UpstreamUnavailable),
        ("refused", UpstreamUnavailable),
        ("slow", UpstreamTimeout),
        ("big", ResponseTooLarge),
    ],
)
async def test_errors_and_tracebacks_carry_origin_only(
    http_server: RunningServer, scenario: str, expected: type[GuardedHttpError]
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(garbage, LOOPBACK, 0)
    garbage_port = listener.sockets[0].getsockname()[1]
    closed = free_socket()
    refused_port = closed.getsockname()[1]
    closed.close()
    secret = "/hook/SECRET-PATH?token=SECRET-QUERY"
    url = {
        "garbage": f"http://127.0.0.1:{garbage_port}{secret}",
        "refused": f"http://127.0.0.1:{refused_port}{secret}",
        "slow": http_server.url("/slow?token=SECRET-QUERY"),
        "big": http_server.url("/big?token=SECRET-QUERY"),
    }[scenario]
    try:
        async with make_client(read_timeout=0.3) as guarded:
            with pytest.raises(expected) as info:
                await guarded.post_json(url, {})
    finally:
        listener.close()
        await listener.wait_closed()
    rendered = "".join(traceback.format_exception(info.value))
    for text in (str(info.value), repr(info.value), rendered):
        assert "SECRET" not in text
        assert "/hook" not in text and "/slow" not in text and "/big" not in text
    assert "127.0.0.1:" in str(info.value)


async def test_tls_uses_original_hostname_for_sni_and_certificate(
    monkeypatch: pytest.MonkeyPatch, tls_server: RunningServer, tls_files: tuple[Path, Path]
) -> None:
    names = {"pinned.example", "other.example"}
    calls = fake_dns(monkeypatch, lambda name: [LOOPBACK] if name in names else None)
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    policy = UrlPolicy(allowlist=("127.0.0.1/32",))
    async with make_client(policy, ssl_context=context) as guarded:
        ok = await guarded.post_json(tls_server.url("/ok", "https", "pinned.example"), {"t": 1})
        assert ok.status_code == 200
        assert json.loads(ok.body) == {"received": {"t": 1}}
        # Same IP, but the certificate does not cover this name: the handshake must fail.
        with pytest.raises(UpstreamUnavailable):
            await guarded.post_json(tls_server.url("/ok", "https", "other.example"), {})
        # Connecting by IP literal fails verification too (the cert names no IP).
        with pytest.raises(UpstreamUnavailable):
            await guarded.post_json(tls_server.url("/ok", "https"), {})
    assert tls_server.state.requests[0].headers["host"] == f"pinned.example:{tls_server.port}"
    assert len(tls_server.state.requests) == 1
    assert "pinned.example" in calls


# --- timeouts, size caps, broken upstreams -----------------------------------------------


async def test_read_timeout(http_server: RunningServer) -> None:
    async with make_client(read_timeout=0.3) as guarded:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await guarded.post_json(http_server.url("/slow?token=SECRET123"), {})
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert "SECRET123" not in message
    assert "/slow" not in message
    assert f"127.0.0.1:{http_server.port}" in message


async def test_total_timeout_stops_dripping_server(http_server: RunningServer) -> None:
    async with make_client(read_timeout=0.5, total_timeout=0.6) as guarded:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await guarded.post_json(http_server.url("/drip"), {})
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_oversized_body(
    client: GuardedHttpClient, http_server: RunningServer, path: str
) -> None:
    with pytest.raises(ResponseTooLarge) as info:
        await client.post_json(http_server.url(path + "?key=SECRET123"), {})
    assert "SECRET123" not in str(info.value)
    assert isinstance(info.value, GuardedHttpError)


async def test_body_at_limit_is_accepted(http_server: RunningServer) -> None:
    async with make_client(max_response_bytes=len(GARBAGE)) as guarded:
        response = await guarded.post_json(http_server.url("/garbage"), {})
    assert response.body == GARBAGE


async def test_non_http_garbage_is_unavailable() -> None:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n" + GARBAGE)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(on_connect, LOOPBACK, 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with make_client() as guarded:
            with pytest.raises(UpstreamUnavailable):
                await guarded.post_json(f"http://127.0.0.1:{port}/x?sig=SECRET123", {})
    finally:
        listener.close()
        await listener.wait_closed()


async def test_connection_refused_is_unavailable() -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    async with make_client() as guarded:
        with pytest.raises(UpstreamUnavailable) as info:
            await guarded.post_json(f"http://127.0.0.1:{port}/", {})
    assert isinstance(info.value, GuardedHttpError)


async def test_unresolvable_host_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def answers(name: str) -> list[str] | None:
        if name == "gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return None

    fake_dns(monkeypatch, answers)
    async with make_client() as guarded:
        with pytest.raises(UpstreamUnavailable):
            await guarded.post_json("http://gone.example/", {})


# --- concurrency ---------------------------------------------------------------------------


async def test_concurrency_is_bounded_per_host(http_server: RunningServer) -> None:
    async with make_client(max_concurrency_per_host=2) as guarded:
        results = await asyncio.gather(
            *(guarded.post_json(http_server.url("/concurrency"), {"i": i}) for i in range(6))
        )
    assert [r.status_code for r in results] == [200] * 6
    assert http_server.state.max_in_flight == 2


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        make_client(max_concurrency_per_host=0)
    with pytest.raises(ValueError):
        make_client(connect_timeout=0)


async def test_loopback_only_in_this_module() -> None:
    """Guard for the test suite itself: every literal address used here is loopback."""
    for address in (LOOPBACK, "127.0.0.2"):
        assert ipaddress.ip_address(address).is_loopback
