"""DND webhook client against a real loopback server through a real GuardedHttpClient."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from dispatch_engine.clients.dnd_webhook import DndAnswer, DndClient, DndQuery, DndStatus
from dispatch_engine.clients.guarded_http import GuardedHttpClient, GuardedResponse
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
LIMIT = 16 * 1024
SECRET_EMAIL = "zoe.private+dnd@secret-person.example"
SECRET_MOBILE = "+14155550123"
QUERY = DndQuery(channel="email", address=SECRET_EMAIL, account="acme", policy="pol-1")
SMS_QUERY = DndQuery(channel="sms", address=SECRET_MOBILE, account="acme", policy="pol-1")


# --- loopback server (tests/net.py serves it) ----------------------------------------------


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ServerState:
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, item: Recorded) -> int:
        """Store a request; return how many requests this path has had, this one included."""
        with self.lock:
            self.requests.append(item)
            return sum(1 for seen in self.requests if seen.path == item.path)

    def paths(self) -> list[str]:
        with self.lock:
            return [item.path for item in self.requests]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.in_flight = 0
            self.max_in_flight = 0


def make_app(state: ServerState) -> AsgiApp:
    async def reply(send: Send, document: object, status: int = 200) -> None:
        await respond(send, status, json.dumps(document).encode())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        count = state.record(Recorded(path, headers, body))
        try:
            if path == "/yes":
                await reply(send, {"dnd": True})
            elif path == "/no":
                await reply(send, {"dnd": False, "note": "extra members are ignored"})
            elif path == "/by-address":
                # DND exactly for addresses on the "dnd.example" domain.
                address = json.loads(body)["address"]
                await reply(send, {"dnd": address.endswith("@dnd.example")})
            elif path == "/slow":
                await wait_for_disconnect(receive, 5.0)
                await reply(send, {"dnd": False})
            elif path == "/error":
                await reply(send, {"error": "boom"}, 500)
            elif path == "/flaky":
                if count == 1:
                    await reply(send, {"error": "boom"}, 503)
                else:
                    await reply(send, {"dnd": True})
            elif path == "/busy":
                await respond(send, 429, b"", [(b"retry-after", b"1")])
            elif path == "/garbage":
                await respond(send, 200, GARBAGE)
            elif path == "/no-flag":
                await reply(send, {"status": "ok"})
            elif path == "/string-flag":
                await reply(send, {"dnd": "yes"})
            elif path == "/number-flag":
                await reply(send, {"dnd": 1})
            elif path == "/list":
                await reply(send, [{"dnd": False}])
            elif path == "/redirect":
                await respond(send, 302, b"", [(b"location", b"/target")])
            elif path == "/target":
                await reply(send, {"dnd": False})
            elif path == "/big":
                await respond(send, 200, b'{"dnd": false, "pad": "' + b"x" * LIMIT + b'"}')
            elif path == "/concurrency":
                with state.lock:
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                await asyncio.sleep(0.1)
                with state.lock:
                    state.in_flight -= 1
                await reply(send, {"dnd": False})
            else:
                await reply(send, {"error": "not found"}, 404)
        except OSError:
            pass  # client went away (timeouts): expected in these tests

    return app


@dataclass
class RunningServer:
    port: int
    state: ServerState

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    state = ServerState()
    with serve(make_app(state)) as port:
        yield RunningServer(port, state)


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        request.getfixturevalue("server").state.reset()


def make_http(policy: UrlPolicy = LOOPBACK_POLICY, **overrides: Any) -> GuardedHttpClient:
    options: dict[str, Any] = {
        "connect_timeout": 0.3,
        "read_timeout": 0.3,
        "max_response_bytes": LIMIT,
        "max_concurrency_per_host": 16,
    }
    options.update(overrides)
    return GuardedHttpClient(policy, **options)


@pytest.fixture
async def http() -> AsyncIterator[GuardedHttpClient]:
    async with make_http() as guarded:
        yield guarded


class SleepRecorder:
    """No-op ``sleep`` that remembers the delays asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleep() -> SleepRecorder:
    return SleepRecorder()


def assert_no_pii(answer: DndAnswer) -> None:
    text = f"{answer!r} {answer.detail}"
    for secret in (SECRET_EMAIL, SECRET_MOBILE, "secret-person", "zoe.private", "SECRET-TOKEN"):
        assert secret not in text


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"), [("/yes", DndStatus.DND), ("/no", DndStatus.ALLOWED)]
)
async def test_yes_and_no(
    http: GuardedHttpClient, server: RunningServer, path: str, expected: DndStatus
) -> None:
    answer = await DndClient(http).check(server.url(path), QUERY)
    assert answer.status is expected
    assert answer.detail is None
    assert answer.elapsed_ms > 0
    assert server.state.paths() == [path]


async def test_request_has_exactly_the_documented_fields(
    http: GuardedHttpClient, server: RunningServer
) -> None:
    await DndClient(http).check(server.url("/yes"), SMS_QUERY)
    [seen] = server.state.requests
    assert json.loads(seen.body) == {
        "channel": "sms",
        "address": SECRET_MOBILE,
        "account": "acme",
        "policy": "pol-1",
    }
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"].startswith("dispatch-engine-")


# --- transient failures are retried ----------------------------------------------------------


async def test_timeout_is_unavailable_after_all_attempts(server: RunningServer) -> None:
    async with make_http(read_timeout=0.3) as guarded:
        client = DndClient(guarded, attempts=2, sleep=SleepRecorder())
        started = time.monotonic()
        answer = await client.check(server.url("/slow?token=SECRET-TOKEN"), QUERY)
    assert answer.status is DndStatus.UNAVAILABLE
    assert answer.detail == "timeout"
    assert server.state.paths() == ["/slow", "/slow"]
    assert answer.elapsed_ms >= 500
    assert time.monotonic() - started < 3.0
    assert_no_pii(answer)


async def test_server_error_then_success(
    http: GuardedHttpClient, server: RunningServer, sleep: SleepRecorder
) -> None:
    answer = await DndClient(http, sleep=sleep).check(server.url("/flaky"), QUERY)
    assert answer.status is DndStatus.DND
    assert answer.detail is None
    assert server.state.paths() == ["/flaky", "/flaky"]
    assert len(sleep.delays) == 1


async def test_server_error_always(
    http: GuardedHttpClient, server: RunningServer, sleep: SleepRecorder
) -> None:
    answer = await DndClient(http, attempts=3, sleep=sleep).check(server.url("/error"), QUERY)
    assert answer == DndAnswer(DndStatus.UNAVAILABLE, "http 500", answer.elapsed_ms)
    assert server.state.paths() == ["/error"] * 3
    assert len(sleep.delays) == 2


async def test_too_many_requests_is_retried(
    http: GuardedHttpClient, server: RunningServer, sleep: SleepRecorder
) -> None:
    answer = await DndClient(http, attempts=2, sleep=sleep).check(server.url("/busy"), QUERY)
    assert answer.status is DndStatus.UNAVAILABLE
    assert answer.detail == "http 429"
    assert server.state.paths() == ["/busy", "/busy"]


async def test_connection_refused_is_retried_and_unavailable(sleep: SleepRecorder) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    async with make_http() as guarded:
        answer = await DndClient(guarded, attempts=3, sleep=sleep).check(
            f"http://{LOOPBACK}:{port}/hook", QUERY
        )
    assert answer.status is DndStatus.UNAVAILABLE
    assert answer.detail == "connection failed"
    assert len(sleep.delays) == 2


async def test_backoff_is_exponential_with_full_jitter(
    http: GuardedHttpClient,
    server: RunningServer,
    sleep: SleepRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounds: list[tuple[float, float]] = []

    def upper(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", upper)
    client = DndClient(http, attempts=4, backoff_seconds=0.25, sleep=sleep)
    await client.check(server.url("/error"), QUERY)
    assert bounds == [(0, 0.25), (0, 0.5), (0, 1.0)]
    assert sleep.delays == [0.25, 0.5, 1.0]


async def test_real_sleep_is_used_by_default(
    http: GuardedHttpClient, server: RunningServer
) -> None:
    answer = await DndClient(http, attempts=2, backoff_seconds=0.01).check(
        server.url("/flaky"), QUERY
    )
    assert answer.status is DndStatus.DND


# --- non-transient failures are not retried --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/missing", "http 404"),
        ("/garbage", "malformed reply"),
        ("/no-flag", "malformed reply"),
        ("/string-flag", "malformed reply"),
        ("/number-flag", "malformed reply"),
        ("/list", "malformed reply"),
        ("/big", "response too large"),
    ],
)
async def test_not_retried(
    http: GuardedHttpClient, server: RunningServer, sleep: SleepRecorder, path: str, detail: str
) -> None:
    client = DndClient(http, attempts=3, sleep=sleep)
    answer = await client.check(server.url(path + "?token=SECRET-TOKEN"), QUERY)
    assert answer.status is DndStatus.UNAVAILABLE
    assert answer.detail == detail
    assert server.state.paths() == [path]
    assert sleep.delays == []
    assert_no_pii(answer)


async def test_redirect_is_unavailable_and_not_followed(
    http: GuardedHttpClient, server: RunningServer, sleep: SleepRecorder
) -> None:
    answer = await DndClient(http, attempts=3, sleep=sleep).check(server.url("/redirect"), QUERY)
    assert answer.status is DndStatus.UNAVAILABLE
    assert answer.detail == "redirect refused"
    assert server.state.paths() == ["/redirect"]
    assert "/target" not in server.state.paths()


async def test_url_not_allow_listed_is_refused_before_connecting(
    server: RunningServer, sleep: SleepRecorder
) -> None:
    async with make_http(UrlPolicy(allow_http=True)) as guarded:
        client = DndClient(guarded, attempts=3, sleep=sleep)
        answer = await client.check(server.url("/yes?token=SECRET-TOKEN"), QUERY)
    assert answer.status is DndStatus.UNAVAILABLE
    assert answer.detail is not None
    assert answer.detail.startswith("refused url")
    assert "loopback" in answer.detail
    assert server.state.requests == []
    assert sleep.delays == []
    assert_no_pii(answer)


# --- batches ---------------------------------------------------------------------------------


async def test_check_many_preserves_order_and_deduplicates(
    http: GuardedHttpClient, server: RunningServer
) -> None:
    def query(address: str, channel: str = "email", account: str = "acme") -> DndQuery:
        return DndQuery(channel=channel, address=address, account=account, policy="pol-1")

    url = server.url("/by-address")
    other_url = server.url("/yes")
    batch = [
        (url, query("a@dnd.example")),
        (url, query("b@ok.example")),
        (url, query("a@dnd.example", account="other")),  # same (url, channel, address)
        (other_url, query("b@ok.example")),  # other URL: asked separately
        (url, query("c@dnd.example")),
        (url, query("b@ok.example")),
        (url, query("+14155550100", channel="sms")),
        (url, query("+14155550100", channel="email")),  # other channel: asked separately
    ]
    answers = await DndClient(http).check_many(batch)
    d, ok = DndStatus.DND, DndStatus.ALLOWED
    assert [a.status for a in answers] == [d, ok, d, d, d, ok, ok, ok]
    assert answers[0] is answers[2]
    assert answers[1] is answers[5]
    assert server.state.paths().count("/by-address") == 5
    assert server.state.paths().count("/yes") == 1
    asked = [json.loads(r.body) for r in server.state.requests if r.path == "/by-address"]
    first_a = next(body for body in asked if body["address"] == "a@dnd.example")
    assert first_a["account"] == "acme"


async def test_check_many_empty(http: GuardedHttpClient) -> None:
    assert await DndClient(http).check_many([]) == []


async def test_check_many_respects_max_concurrency(
    http: GuardedHttpClient, server: RunningServer
) -> None:
    batch = [
        (server.url("/concurrency"), DndQuery("email", f"user{i}@example.com", "acme", "p"))
        for i in range(8)
    ]
    answers = await DndClient(http, max_concurrency=3).check_many(batch)
    assert [a.status for a in answers] == [DndStatus.ALLOWED] * 8
    assert len(server.state.requests) == 8
    assert server.state.max_in_flight == 3


async def test_check_many_mixes_failures_without_raising(
    http: GuardedHttpClient, server: RunningServer, sleep: SleepRecorder
) -> None:
    batch = [
        (server.url("/yes"), QUERY),
        (server.url("/garbage"), QUERY),
        (server.url("/no"), SMS_QUERY),
        ("ftp://example.com/hook", QUERY),
    ]
    answers = await DndClient(http, sleep=sleep).check_many(batch)
    assert [a.status for a in answers] == [
        DndStatus.DND,
        DndStatus.UNAVAILABLE,
        DndStatus.ALLOWED,
        DndStatus.UNAVAILABLE,
    ]
    assert answers[1].detail == "malformed reply"
    assert answers[3].detail is not None and answers[3].detail.startswith("refused url: ")
    for answer in answers:
        assert_no_pii(answer)


# --- personal data and robustness ------------------------------------------------------------


class ExplodingHttp(GuardedHttpClient):
    """A client whose calls fail with an unexpected error quoting the payload."""

    def __init__(self) -> None:
        super().__init__(LOOPBACK_POLICY, 0.1, 0.1, 1024, 1)

    async def post_json(self, url: str, payload: Mapping[str, object]) -> GuardedResponse:
        raise RuntimeError(f"bug while sending {payload}")


async def test_unexpected_error_is_unavailable_and_not_logged_with_pii(
    caplog: pytest.LogCaptureFixture, sleep: SleepRecorder
) -> None:
    captured: list[MutableMapping[str, Any]] = []
    with structlog.testing.capture_logs() as logs, caplog.at_level(logging.DEBUG):
        async with ExplodingHttp() as exploding:
            answer = await DndClient(exploding, sleep=sleep).check("https://x.example/", QUERY)
        captured.extend(logs)
    assert answer.status is DndStatus.UNAVAILABLE
    assert answer.detail == "internal error"
    assert captured and captured[0]["error_type"] == "RuntimeError"
    assert SECRET_EMAIL not in repr(captured) + caplog.text
    assert sleep.delays == []


def test_query_repr_and_errors_do_not_contain_the_address() -> None:
    assert SECRET_EMAIL not in repr(QUERY)
    assert SECRET_MOBILE not in str(SMS_QUERY)
    with pytest.raises(ValueError) as info:
        DndQuery(channel="fax", address=SECRET_MOBILE, account="acme", policy="p")
    assert SECRET_MOBILE not in str(info.value)


async def test_constructor_validation(http: GuardedHttpClient) -> None:
    for bad in ({"attempts": 0}, {"backoff_seconds": -1.0}, {"max_concurrency": 0}):
        with pytest.raises(ValueError):
            DndClient(http, **bad)


def test_status_values_are_stable() -> None:
    assert [s.value for s in DndStatus] == ["allowed", "dnd", "unavailable"]
