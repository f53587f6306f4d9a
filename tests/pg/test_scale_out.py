"""Scale-out: three worker processes against one PostgreSQL deliver 20,000 invitations to an
SQS-protocol sink that records every message id; one worker is SIGKILLed and another
SIGTERMed mid-run. Afterwards lost = 0, unexpected = 0, duplicates carry the same id, and
the per-worker counts show the load was shared."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dispatch_engine.context import AppContext
from dispatch_engine.models import Message, OutboxEntry
from tests.conftest import setup_account
from tests.procs import free_port, send_now_dispatch, start_worker

CONTACTS = 20_000


def _sink(port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sqs_sink", "--port", str(port), "--keep-ids"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sink/stats", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the sink did not start")


def _worker(url: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        url,
        log,
        worker_id=name,
        claim_batch_size="250",
        claim_interval_seconds="0.1",
        relay_interval_seconds="0.1",
        relay_batch_size="250",
        claim_lease_seconds="5",
    )


async def _counts(context: AppContext) -> tuple[int, int]:
    async with context.sessions() as session:
        sent = (
            await session.execute(
                select(func.count()).select_from(Message).where(Message.state == "sent")
            )
        ).scalar_one()
        # The relay deletes an outbox row once the queue acknowledged it.
        unpushed = (
            await session.execute(select(func.count()).select_from(OutboxEntry))
        ).scalar_one()
        delivered = sent - unpushed
    return int(sent), int(delivered)


@pytest.mark.slow
async def test_three_workers_share_twenty_thousand_with_a_kill_and_a_term(
    client: httpx.AsyncClient, admin: dict[str, str], context: AppContext, tmp_path: Path
) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("several workers need PostgreSQL")
    from dispatch_engine.clock import SystemClock

    context.clock = SystemClock()
    port = free_port()
    sink = _sink(port, tmp_path / "sink.log")
    endpoint = f"http://127.0.0.1:{port}"
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        await setup_account(client, admin, queue=False)
        put = await client.put(
            "/v1/accounts/acme/queue-integration",
            headers=admin,
            json={
                "kind": "sqs",
                "queue_url": f"{endpoint}/123456789012/invitations",
                "region": "us-east-1",
                "endpoint_url": endpoint,
                "access_key_id": "x",
                "secret_access_key": "y",
            },
        )
        assert put.status_code == 200, put.text
        dispatch = await send_now_dispatch(client, admin)
        csv = "email\n" + "".join(f"p{i}@example.com\n" for i in range(CONTACTS))
        posted = await client.post(
            f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
            headers={**admin, "Content-Type": "text/csv"},
            content=csv.encode(),
        )
        assert posted.json()["counts"]["accepted"] == CONTACTS

        url = context.settings.effective_database_url
        log = tmp_path / "workers.log"
        workers = {name: _worker(url, name, log) for name in ("w1", "w2", "w3")}
        deadline = time.monotonic() + 240
        killed = termed = False
        while time.monotonic() < deadline:
            sent, delivered = await _counts(context)
            if not killed and sent >= CONTACTS // 4:
                workers["w1"].kill()  # SIGKILL mid-run: its claims come back by lease
                killed = True
            if not termed and sent >= CONTACTS // 2:
                workers["w2"].send_signal(signal.SIGTERM)  # graceful: hands claims back
                termed = True
            if sent >= CONTACTS and delivered >= CONTACTS:
                break
            await asyncio.sleep(0.5)
        assert killed and termed
        assert workers["w2"].wait(timeout=30) == 0
        workers["w3"].send_signal(signal.SIGTERM)
        assert workers["w3"].wait(timeout=30) == 0

        async with context.sessions() as session:
            passed = set(
                (await session.execute(select(Message.id).where(Message.state == "sent"))).scalars()
            )
            by_worker = dict(
                (
                    await session.execute(
                        select(Message.handled_by, func.count())
                        .where(Message.state == "sent")
                        .group_by(Message.handled_by)
                    )
                ).all()
            )
        async with httpx.AsyncClient(base_url=endpoint, timeout=10) as sink_api:
            accepted = set((await sink_api.get("/_sink/ids")).json())
            stats = (await sink_api.get("/_sink/stats")).json()
        assert len(passed) == CONTACTS
        assert passed - accepted == set(), "lost"
        assert accepted - passed == set(), "unexpected"
        # At-least-once: a re-push after the kill is the same message id (counted, not new).
        assert stats["distinct_ids"] == CONTACTS
        assert sum(by_worker.values()) == CONTACTS
        assert set(by_worker) >= {"w2", "w3"}, by_worker
        assert all(count > CONTACTS * 0.05 for name, count in by_worker.items() if name != "w1")
        print(f"scale-out: per worker {by_worker}; sink duplicates {stats['duplicates']}")
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
        sink.terminate()
        sink.wait(timeout=10)
