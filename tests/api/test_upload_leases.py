"""An upload's lease (issue 18.2): a request that stalls or dies mid-file does not leave
its batch `processing` nor its Idempotency-Key in flight for ever.

With the injected clock: a retry with the same key after the lease takes the key over and
stores the rest (the stalled request, woken, stores nothing more: the fence); the
maintenance job ends an abandoned batch as `interrupted`; a retry on another dispatch is
refused. The real `kill -9` of the API is in tests/crash/test_upload_killed.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from dispatch_engine.clock import FrozenClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import ContactBatch, Invite
from dispatch_engine.scheduler.worker import Worker
from tests.helpers import (
    ACME,
    CSV,
    assert_problem,
    counts,
    get_batch,
    make_dispatch,
    post_csv,
)

FIRST = 2000  # the test settings' chunk: the stalled request has stored one chunk
ROWS = 2500
HEADER = b"email,external_id\n"


def row(n: int) -> bytes:
    return f"p{n}@example.com,{f'e-{n}' if n % 2 else ''}\n".encode()


def whole_file() -> bytes:
    return HEADER + b"".join(row(n) for n in range(ROWS))


class StalledUpload:
    """A request that sends the first chunk's rows, then stalls until released."""

    def __init__(self, client: httpx.AsyncClient, admin: dict[str, str], dispatch: str) -> None:
        self.release = asyncio.Event()
        self.task: asyncio.Task[httpx.Response] | None = None
        self.client, self.admin, self.dispatch = client, admin, dispatch

    async def body(self) -> AsyncIterator[bytes]:
        yield HEADER + b"".join(row(n) for n in range(FIRST))
        await self.release.wait()
        yield b"".join(row(n) for n in range(FIRST, ROWS))

    async def start(self, context: AppContext, headers: dict[str, str]) -> None:
        self.task = asyncio.create_task(
            self.client.post(
                f"{ACME}/dispatches/{self.dispatch}/contacts",
                headers={**self.admin, **CSV, **headers},
                content=self.body(),
            )
        )
        for _ in range(200):
            if await stored(context, self.dispatch) >= FIRST:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the first chunk was never stored")

    async def finish(self) -> httpx.Response:
        assert self.task is not None
        self.release.set()
        return await self.task


async def stored(context: AppContext, dispatch_id: str) -> int:
    async with context.sessions() as session:
        found = await session.execute(
            select(func.count()).select_from(Invite).where(Invite.dispatch_id == dispatch_id)
        )
        return int(found.scalar_one())


def past_the_lease(context: AppContext) -> None:
    clock = context.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(seconds=context.settings.upload_lease_seconds + 1))


async def test_a_retry_takes_over_a_stalled_upload_which_then_stores_nothing(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    key = {"Idempotency-Key": "stalls"}
    stalled = StalledUpload(client, acme, dispatch["id"])
    await stalled.start(context, key)

    early = await post_csv(client, acme, dispatch["id"], whole_file(), headers=key)
    assert_problem(early, 409, "idempotency-in-flight")  # its lease still runs

    past_the_lease(context)
    retry = await post_csv(client, acme, dispatch["id"], whole_file(), headers=key)
    assert retry.status_code == 202, retry.text
    body: dict[str, Any] = retry.json()
    assert body["counts"] == counts(ROWS, ROWS)
    dead = await get_batch(client, acme, body["resumed_from"])
    assert dead["status"] == "interrupted"
    assert dead["counts"] == counts(FIRST, FIRST)

    woken = await stalled.finish()
    assert_problem(woken, 409, "upload-taken-over")
    assert await stored(context, dispatch["id"]) == ROWS  # nothing twice
    assert (await get_batch(client, acme, dead["batch"]))["status"] == "interrupted"
    replay = await post_csv(client, acme, dispatch["id"], whole_file(), headers=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == body


async def test_the_maintenance_job_ends_an_abandoned_upload_as_interrupted(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    stalled = StalledUpload(client, acme, dispatch["id"])
    await stalled.start(context, {})
    async with context.sessions() as session:
        batch_id = (
            await session.execute(
                select(ContactBatch.id).where(ContactBatch.dispatch_id == dispatch["id"])
            )
        ).scalar_one()
    worker = Worker(context)
    await worker.maintain()
    assert (await get_batch(client, acme, batch_id))["status"] == "processing"  # alive

    past_the_lease(context)
    await worker.maintain()
    batch = await get_batch(client, acme, batch_id)
    assert batch["status"] == "interrupted"
    assert batch["counts"] == counts(FIRST, FIRST)
    assert "stopped before its end" in batch["error"]
    assert_problem(await stalled.finish(), 409, "upload-taken-over")
    assert await stored(context, dispatch["id"]) == FIRST


async def test_a_dead_uploads_key_cannot_be_taken_over_for_another_dispatch(
    client: httpx.AsyncClient, acme: dict[str, str], context: AppContext
) -> None:
    _, dispatch = await make_dispatch(client, acme)
    _, other = await make_dispatch(client, acme, name="Other")
    key = {"Idempotency-Key": "moves"}
    stalled = StalledUpload(client, acme, dispatch["id"])
    await stalled.start(context, key)
    past_the_lease(context)
    elsewhere = await post_csv(client, acme, other["id"], whole_file(), headers=key)
    assert_problem(elsewhere, 422, "idempotency-key-reused")
    assert await stored(context, other["id"]) == 0
    stalled_answer = await stalled.finish()  # not taken over: it finishes its own file
    assert stalled_answer.status_code == 202, stalled_answer.text
    assert stalled_answer.json()["counts"] == counts(ROWS, ROWS)
