"""Two real worker processes on one PostgreSQL never handle the same message (R-SCH-1)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dispatch_engine.context import AppContext
from dispatch_engine.models import LocalQueueMessage, Message, OutboxEntry
from tests.conftest import setup_account
from tests.procs import send_now_dispatch, start_worker

CONTACTS = 3000


def _worker(url: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        url,
        log,
        worker_id=name,
        claim_batch_size="50",
        claim_interval_seconds="0.1",
        relay_interval_seconds="0.1",
    )


async def test_two_worker_processes_share_the_load_and_never_double_send(
    client: httpx.AsyncClient, admin: dict[str, str], context: AppContext, tmp_path: Path
) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("several workers need PostgreSQL (SQLite runs one worker)")
    from dispatch_engine.clock import SystemClock

    context.clock = SystemClock()  # the processes run on real time
    await setup_account(client, admin)
    dispatch = await send_now_dispatch(client, admin, fatigue={"pending_token": {"enabled": False}})
    contacts = [{"email": f"p{i}@example.com"} for i in range(CONTACTS)]
    response = await client.post(
        f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
        headers=admin,
        json={"contacts": contacts},
    )
    assert response.json()["counts"]["accepted"] == CONTACTS

    url = context.settings.effective_database_url
    workers = [_worker(url, f"w{i}", tmp_path / f"w{i}.log") for i in (1, 2)]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with context.sessions() as session:
                queued = (
                    await session.execute(select(func.count()).select_from(LocalQueueMessage))
                ).scalar_one()
                unpushed = (
                    await session.execute(select(func.count()).select_from(OutboxEntry))
                ).scalar_one()
            if queued >= CONTACTS and unpushed == 0:
                break
            await asyncio.sleep(0.5)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            assert process.wait(timeout=30) == 0, (tmp_path / "w1.log").read_text()

    async with context.sessions() as session:
        by_worker = dict(
            (
                await session.execute(
                    select(Message.handled_by, func.count())
                    .where(Message.state == "sent")
                    .group_by(Message.handled_by)
                )
            ).all()
        )
        outbox = (await session.execute(select(func.count()).select_from(OutboxEntry))).scalar_one()
        queue_ids = list((await session.execute(select(LocalQueueMessage.message_id))).scalars())
    assert sum(by_worker.values()) == CONTACTS
    assert outbox == 0  # every row was pushed, then deleted once the queue had it
    assert len(queue_ids) == len(set(queue_ids)) == CONTACTS
    assert set(by_worker) == {"w1", "w2"}, by_worker
    assert min(by_worker.values()) > CONTACTS * 0.1, by_worker
