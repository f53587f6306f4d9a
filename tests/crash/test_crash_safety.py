"""Crash safety, Jepsen-style (R-RUL-2): SIGKILL the worker again and again, take the queue
away twice, then compare the queue's contents with the database.

Every message that passed is on the queue (lost = 0), none that did not pass is there
(unexpected = 0), and any duplicate carries the same message id (FIFO queues and vendors
de-duplicate on it). Runs on PostgreSQL against moto's SQS server in its own process, so
the queue can go away in two ways:
- stopped and started again (connection refused meanwhile). moto keeps its queues in
  memory, so what the old server held is received before it stops, while no worker runs,
  and the queue is created again under the same URL;
- frozen (SIGSTOP) for a while: requests hang until the sender's timeouts, then it thaws.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import orjson
import pytest
from sqlalchemy import func, select

from dispatch_engine.context import AppContext
from dispatch_engine.models import Message, OutboxEntry
from tests.procs import BIN, free_port, send_now_dispatch, start_worker

CONTACTS = 160
UNSUBSCRIBED = 16
KILL_CYCLES = 12
RESTART_AT = 3  # the cycle that starts with the queue server stopped
DURING_OUTAGE = 40  # contacts posted while it is down, so the relay has work to fail on


def _start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("moto_server did not start")


def _worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        url,
        log,
        grace=2,
        claim_batch_size="10",
        relay_batch_size="10",
        claim_interval_seconds="0.05",
        relay_interval_seconds="0.05",
        claim_lease_seconds="5",
        relay_backoff_seconds="0.2",
        relay_backoff_max_seconds="1",
        relay_max_attempts="1000",
        relay_breaker_cooldown_seconds="0.5",
        sqs_concurrency="2",
    )


def _sqs(endpoint: str) -> Any:
    """An aioboto3 SQS client context on the moto server."""
    return aioboto3.Session().client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def _create_queue(endpoint: str) -> str:
    async with _sqs(endpoint) as sqs:
        url: str = (await sqs.create_queue(QueueName="crash"))["QueueUrl"]
        return url


async def _drain_queue(endpoint: str, queue_url: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with _sqs(endpoint) as sqs:
        empty = 0
        while empty < 3:
            answer = await sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=3600
            )
            batch = answer.get("Messages", [])
            if not batch:
                empty += 1
                continue
            empty = 0
            for message in batch:
                body: dict[str, Any] = orjson.loads(message["Body"])
                seen[body["message_id"]] += 1
    return seen


async def _count(context: AppContext, model: Any, *where: Any) -> int:
    async with context.sessions() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(query)).scalar_one())


async def _unreachable_seen(context: AppContext) -> bool:
    """The relay found the queue down and kept the rows for a retry (what an operator sees)."""
    failing = await _count(
        context,
        OutboxEntry,
        OutboxEntry.attempts > 0,
        OutboxEntry.failed_at.is_(None),
        OutboxEntry.last_error.like("queue unreachable%"),
    )
    return failing > 0


async def _pushed_any(context: AppContext) -> bool:
    """Some message has left the outbox: the queue acknowledged it."""
    sent = await _count(context, Message, Message.state == "sent")
    return sent > await _count(context, OutboxEntry)


async def _settled(context: AppContext) -> bool:
    waiting = await _count(
        context, Message, Message.state.in_(("pending", "deferred", "delayed", "held"))
    )
    unpushed = await _count(
        context, OutboxEntry, OutboxEntry.delivered_at.is_(None), OutboxEntry.failed_at.is_(None)
    )
    return waiting == 0 and unpushed == 0


@pytest.mark.slow
async def test_kill_the_worker_again_and_again_lose_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], context: AppContext, tmp_path: Path
) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("the crash checker runs on PostgreSQL")
    from dispatch_engine.clock import SystemClock

    context.clock = SystemClock()
    rng = random.Random(20261128)
    port = free_port()
    moto = _start_moto(port, tmp_path / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        queue_url = await _create_queue(endpoint)
        assert (
            await client.post("/v1/accounts", headers=admin, json={"id": "acme", "name": "A"})
        ).status_code == 201
        put = await client.put(
            "/v1/accounts/acme/queue-integration",
            headers=admin,
            json={
                "kind": "sqs",
                "queue_url": queue_url,
                "region": "us-east-1",
                "endpoint_url": endpoint,
                "access_key_id": "testing",
                "secret_access_key": "testing",
            },
        )
        assert put.status_code == 200, put.text
        dispatch = await send_now_dispatch(client, admin)
        contacts = [{"email": f"p{i}@example.com", "external_id": f"c{i}"} for i in range(CONTACTS)]
        posted = await client.post(
            f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
            headers=admin,
            json={"contacts": contacts},
        )
        assert posted.json()["counts"]["accepted"] == CONTACTS
        for i in range(UNSUBSCRIBED):
            event = await client.post(
                "/v1/accounts/acme/events",
                headers=admin,
                json={"type": "unsubscribe", "channel": "email", "address": f"p{i}@example.com"},
            )
            assert event.status_code == 200, event.text

        url = context.settings.effective_database_url
        log = tmp_path / "worker.log"
        before_restart: Counter[str] = Counter()
        for cycle in range(KILL_CYCLES):
            if cycle == RESTART_AT:
                if not await _pushed_any(context):  # slow starts so far: let one push first
                    warm = _worker(url, log)
                    workers.append(warm)
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline and not await _pushed_any(context):
                        await asyncio.sleep(0.1)
                    warm.kill()
                    warm.wait()
                # No worker runs now: what the old server holds is all it will ever get.
                before_restart = await _drain_queue(endpoint, queue_url)
                moto.terminate()
                moto.wait(timeout=10)
                more = [
                    {"email": f"p{i}@example.com", "external_id": f"c{i}"}
                    for i in range(CONTACTS, CONTACTS + DURING_OUTAGE)
                ]
                posted = await client.post(
                    f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
                    headers=admin,
                    json={"contacts": more},
                )
                assert posted.json()["counts"]["accepted"] == DURING_OUTAGE
            worker = _worker(url, log)
            workers.append(worker)
            if cycle == RESTART_AT:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not await _unreachable_seen(context):
                    await asyncio.sleep(0.2)
                assert await _unreachable_seen(context), log.read_text()[-3000:]
                # A restarted moto has lost its queues (SQS would not): the worker waits,
                # frozen, until the queue is back, or its pushes would fail for good with
                # "queue does not exist" in between.
                worker.send_signal(signal.SIGSTOP)
                moto = _start_moto(port, tmp_path / "moto-restarted.log")
                assert await _create_queue(endpoint) == queue_url
                worker.send_signal(signal.SIGCONT)
            if cycle == KILL_CYCLES // 2:  # a queue that hangs in the middle of the run
                await asyncio.sleep(0.5)
                moto.send_signal(signal.SIGSTOP)
                await asyncio.sleep(3)
                moto.send_signal(signal.SIGCONT)
            await asyncio.sleep(rng.uniform(0.4, 1.6))
            worker.kill()  # SIGKILL: no cleanup, claims and leases left behind
            worker.wait()
        final = _worker(url, log)
        workers.append(final)
        await asyncio.sleep(3)  # let it start and install its SIGTERM handler
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not await _settled(context):
            await asyncio.sleep(0.5)
        final.send_signal(signal.SIGTERM)
        assert final.wait(timeout=30) == 0
        assert await _settled(context), log.read_text()[-3000:]

        async with context.sessions() as db:
            passed = set(
                (await db.execute(select(Message.id).where(Message.state == "sent"))).scalars()
            )
            not_passed = set(
                (await db.execute(select(Message.id).where(Message.state != "sent"))).scalars()
            )
        delivered = before_restart + await _drain_queue(endpoint, queue_url)
        lost = passed - set(delivered)
        unexpected = set(delivered) - passed
        assert before_restart, "the first server received nothing before it stopped"
        assert len(passed) == CONTACTS + DURING_OUTAGE - UNSUBSCRIBED
        assert len(not_passed) == UNSUBSCRIBED
        assert lost == set(), f"lost {len(lost)}"
        assert unexpected == set(), f"unexpected {len(unexpected)}"
        # Duplicates (at-least-once) are the same message id by construction of the Counter;
        # report how many there were.
        duplicates = sum(count - 1 for count in delivered.values())
        print(
            f"crash checker: {len(passed)} passed, {len(delivered)} distinct on the queue, "
            f"lost 0, unexpected 0, {duplicates} duplicate deliveries (same message id)"
        )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        moto.send_signal(signal.SIGCONT)
        moto.terminate()
        moto.wait(timeout=10)
