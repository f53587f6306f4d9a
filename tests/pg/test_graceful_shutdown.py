"""SIGTERM: a worker stops claiming, finishes what it holds, returns its leases and exits
within its grace period; another worker then finishes the rest exactly once."""

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
from dispatch_engine.models import LocalQueueMessage, Message
from tests.conftest import setup_account
from tests.procs import send_now_dispatch, start_worker

CONTACTS = 4000
GRACE = 5.0


def _worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        url,
        log,
        grace=GRACE,
        claim_batch_size="100",
        claim_interval_seconds="0.1",
        relay_interval_seconds="0.1",
        claim_lease_seconds="300",
    )


async def _count(context: AppContext, *conditions: object) -> int:
    async with context.sessions() as session:
        query = select(func.count()).select_from(Message).where(*conditions)  # type: ignore[arg-type]
        return int((await session.execute(query)).scalar_one())


async def test_sigterm_returns_leases_and_exits_in_grace(
    client: httpx.AsyncClient, admin: dict[str, str], context: AppContext, tmp_path: Path
) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("real worker processes run against PostgreSQL here")
    from dispatch_engine.clock import SystemClock

    context.clock = SystemClock()
    await setup_account(client, admin)
    dispatch = await send_now_dispatch(client, admin, fatigue={"pending_token": {"enabled": False}})
    posted = await client.post(
        f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
        headers=admin,
        json={"contacts": [{"email": f"p{i}@example.com"} for i in range(CONTACTS)]},
    )
    assert posted.json()["counts"]["accepted"] == CONTACTS
    url = context.settings.effective_database_url
    log = tmp_path / "worker.log"
    first = _worker(url, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and await _count(context, Message.state == "sent") == 0:
        await asyncio.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert first.wait(timeout=GRACE + 10) == 0, log.read_text()[-2000:]
    assert time.monotonic() - started <= GRACE + 2
    # Nothing is left claimed: what it held was finished or handed back.
    from dispatch_engine.models import Message as M

    assert await _count(context, M.claim_token.is_not(None)) == 0
    done_by_first = await _count(context, M.state == "sent")
    assert done_by_first > 0

    second = _worker(url, log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with context.sessions() as session:
                queued = (
                    await session.execute(select(func.count()).select_from(LocalQueueMessage))
                ).scalar_one()
            if queued >= CONTACTS:
                break
            await asyncio.sleep(0.3)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=GRACE + 10) == 0
    assert await _count(context, M.state == "sent") == CONTACTS
    async with context.sessions() as session:
        ids = list((await session.execute(select(LocalQueueMessage.message_id))).scalars())
    assert len(ids) == len(set(ids)) == CONTACTS
