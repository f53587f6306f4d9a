"""Client for the customer's Do-Not-Disturb (DND) webhooks (SPEC R-POL-5).

Just before a message is sent, the engine asks the policy's DND webhook for the message's
channel whether the recipient may be contacted.

Contract (also published for customers in ``docs/dnd-webhook.md``):

* Request: ``POST <url>`` with header ``Content-Type: application/json`` and a JSON body of
  exactly ``{"channel": "email"|"sms", "address": "...", "account": "...", "policy": "..."}``
  (``address`` is the email address or the E.164 mobile number). The ``User-Agent`` starts
  with ``dispatch-engine-``; it is set by the shared guarded HTTP client.
* Answer: status ``200`` with JSON ``{"dnd": true}`` (do not disturb: the message is not
  sent, reason ``dnd``) or ``{"dnd": false}`` (allowed). Other members are ignored.
* Anything else is UNAVAILABLE, never "allowed": another status (3xx included: redirects
  are never followed), a body that is not JSON, JSON without a boolean ``dnd``, a timeout,
  a refused connection, a body over the size cap, or a URL refused by the SSRF guard.
* Transient failures (timeout, connection error, 5xx, 429) are retried within one
  :meth:`DndClient.check` up to ``attempts`` tries in all, sleeping
  ``random.uniform(0, backoff_seconds * 2**n)`` before retry ``n + 1`` (exponential backoff,
  full jitter). Non-transient ones (3xx, other 4xx, malformed body, refused URL, too large)
  are not retried: asking again at once would get the same answer.
* The engine, not this module, retries an UNAVAILABLE answer later and suppresses the message
  with reason ``dnd_unavailable`` past a limit.

The recipient address is personal data: it is sent to the webhook and nowhere else. It is
never logged, never put in :attr:`DndAnswer.detail` or in an exception text, and is left
out of ``repr(DndQuery)``. Details never carry the URL either (paths and query strings of
webhook URLs often hold tokens).

SSRF checks, DNS pinning, timeouts, the response size cap and the per-host concurrency bound
are all the job of :class:`GuardedHttpClient`; this module adds the DND protocol, retries,
an overall concurrency bound and de-duplication of a batch.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from dispatch_engine.clients.guarded_http import (
    GuardedHttpClient,
    GuardedHttpError,
    GuardedResponse,
    ResponseTooLarge,
    UnsafeUrlError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["CHANNELS", "DndAnswer", "DndClient", "DndQuery", "DndStatus"]

CHANNELS = frozenset({"email", "sms"})

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DndQuery:
    """One question for a DND webhook; ``address`` is PII and is kept out of ``repr``."""

    channel: str
    address: str = field(repr=False)
    account: str
    policy: str

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError("channel must be 'email' or 'sms'")


class DndStatus(StrEnum):
    """What the engine may do: send (ALLOWED), not send (DND), or try again later."""

    ALLOWED = "allowed"
    DND = "dnd"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class DndAnswer:
    """Outcome of one check; ``detail`` says why it is UNAVAILABLE (never PII or the URL).

    ``elapsed_ms`` covers the whole check, retries and backoff sleeps included.
    """

    status: DndStatus
    detail: str | None = None
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class _Attempt:
    """Result of one HTTP try: the answer so far and whether trying again could help."""

    status: DndStatus
    detail: str | None
    transient: bool


def _parse_reply(body: bytes) -> DndStatus | None:
    """Return ALLOWED/DND for a well-formed reply, None for anything else."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        return None
    if not isinstance(document, dict):
        return None
    flag = document.get("dnd")
    if not isinstance(flag, bool):  # 1, "yes", null ... are not answers
        return None
    return DndStatus.DND if flag else DndStatus.ALLOWED


def _judge(response: GuardedResponse) -> _Attempt:
    """Map an HTTP answer to an attempt result; only 200 with a boolean ``dnd`` counts."""
    status = response.status_code
    if status == 200:
        verdict = _parse_reply(response.body)
        if verdict is None:
            return _Attempt(DndStatus.UNAVAILABLE, "malformed reply", transient=False)
        return _Attempt(verdict, None, transient=False)
    if 300 <= status < 400:
        return _Attempt(DndStatus.UNAVAILABLE, "redirect refused", transient=False)
    transient = status == 429 or status >= 500
    return _Attempt(DndStatus.UNAVAILABLE, f"http {status}", transient=transient)


class DndClient:
    """Asks DND webhooks about recipients; every failure becomes an UNAVAILABLE answer.

    ``check`` and ``check_many`` never raise (except on cancellation), so one broken webhook
    cannot fail a whole batch and no caller can mistake an error for "allowed".
    """

    def __init__(
        self,
        http: GuardedHttpClient,
        *,
        attempts: int = 2,
        backoff_seconds: float = 0.2,
        max_concurrency: int = 64,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``sleep`` is injectable so tests (and callers with their own clock) skip waits."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if backoff_seconds < 0:
            raise ValueError("backoff_seconds must not be negative")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._http = http
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)

    async def check(self, url: str, query: DndQuery) -> DndAnswer:
        """Ask ``url`` about ``query.address``, retrying transient failures with backoff."""
        payload = {
            "channel": query.channel,
            "address": query.address,
            "account": query.account,
            "policy": query.policy,
        }
        started = time.perf_counter()
        attempt = await self._try_once(url, payload)
        for retry in range(self._attempts - 1):
            if not attempt.transient:
                break
            await self._sleep(random.uniform(0, self._backoff * 2**retry))
            attempt = await self._try_once(url, payload)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return DndAnswer(attempt.status, attempt.detail, elapsed_ms)

    async def check_many(self, requests: Sequence[tuple[str, DndQuery]]) -> list[DndAnswer]:
        """Check a batch concurrently; answers come back in input order.

        Identical ``(url, channel, address)`` pairs are asked once (with the first query's
        account and policy) and share the answer. Concurrency is bounded overall by
        ``max_concurrency`` and per host by the guarded HTTP client.
        """
        unique: dict[tuple[str, str, str], tuple[str, DndQuery]] = {}
        keys: list[tuple[str, str, str]] = []
        for url, query in requests:
            key = (url, query.channel, query.address)
            unique.setdefault(key, (url, query))
            keys.append(key)
        answers = await asyncio.gather(*(self.check(url, query) for url, query in unique.values()))
        by_key = dict(zip(unique, answers, strict=True))
        return [by_key[key] for key in keys]

    async def _try_once(self, url: str, payload: dict[str, str]) -> _Attempt:
        """One POST; the semaphore is held only while the request runs, not during backoff."""
        try:
            async with self._semaphore:
                response = await self._http.post_json(url, payload)
        except UnsafeUrlError as exc:
            return _Attempt(DndStatus.UNAVAILABLE, f"refused url: {exc.reason}", transient=False)
        except UpstreamTimeout:
            return _Attempt(DndStatus.UNAVAILABLE, "timeout", transient=True)
        except UpstreamUnavailable:
            return _Attempt(DndStatus.UNAVAILABLE, "connection failed", transient=True)
        except ResponseTooLarge:
            return _Attempt(DndStatus.UNAVAILABLE, "response too large", transient=False)
        except GuardedHttpError:
            return _Attempt(DndStatus.UNAVAILABLE, "request failed", transient=False)
        except Exception as exc:
            # A bug or an unmapped library error must still not count as "allowed"; log the
            # type only, since a message could quote the payload (and so the address).
            log.error("dnd check failed unexpectedly", error_type=type(exc).__name__)
            return _Attempt(DndStatus.UNAVAILABLE, "internal error", transient=False)
        return _judge(response)
