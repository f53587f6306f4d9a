"""SenderCache: one sender per integration version, shared by concurrent relay lanes, and
every replaced sender closed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from dispatch_engine.queues.base import OutgoingMessage, SendFailure
from dispatch_engine.queues.factory import SenderCache


class _Sender:
    def __init__(self, version: int) -> None:
        self.version = version
        self.closed = False

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendFailure]:
        return []

    async def probe(self, body: bytes, message_id: str) -> None:
        return None

    async def aclose(self) -> None:
        await asyncio.sleep(0)  # closing yields, as a real client's does
        self.closed = True


class _Cache(SenderCache):
    def __init__(self) -> None:
        super().__init__(context=None)  # type: ignore[arg-type]
        self.built: list[_Sender] = []

    def _build(self, integration: Any) -> Any:
        sender = _Sender(integration.version)
        self.built.append(sender)
        return sender


def _integration(version: int, account: str = "acme") -> Any:
    return SimpleNamespace(account_id=account, version=version)


async def test_lanes_asking_at_once_share_one_sender_and_nothing_leaks() -> None:
    cache = _Cache()
    first = await cache.get(_integration(1))
    other_account = await cache.get(_integration(1, "globex"))
    # Three relay lanes see the edited integration (version 2) at the same moment.
    got = await asyncio.gather(*(cache.get(_integration(2)) for _ in range(3)))
    assert len({id(sender) for sender in got}) == 1
    assert isinstance(first, _Sender) and first.closed
    assert isinstance(other_account, _Sender) and not other_account.closed
    unclosed = {id(s) for s in cache.built if not s.closed}
    assert unclosed == {id(got[0]), id(other_account)}  # every other sender built was closed
    await cache.aclose()
    assert all(s.closed for s in cache.built)
