"""A worker frozen (SIGSTOP) with its claim transaction open does not hold its messages
past the lease: PostgreSQL ends the idle transaction, the other worker sends them, and the
frozen one, woken up, writes nothing (issue 18.3)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from dispatch_engine.context import AppContext
from dispatch_engine.models import LocalQueueMessage, Message, OutboxEntry
from tests.conftest import setup_account
from tests.procs import send_now_dispatch, start_worker

CONTACTS = 1500
LEASE = 5


def _worker(url: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        url,
        log,
        worker_id=name,
        claim_batch_size="300",
        claim_concurrency="1",
        relay_parallel="1",
        claim_lease_seconds=str(LEASE),
        claim_interval_seconds="0.1",
        relay_interval_seconds="0.1",
    )


async def _open_transactions(context: AppContext, name: str, table: str = "messages") -> int:
    """Transactions of worker `name` that hold row locks on `table`."""
    async with context.sessions() as session:
        found = await session.execute(
            text(
                "SELECT count(DISTINCT a.pid) FROM pg_stat_activity a "
                "JOIN pg_locks l ON l.pid = a.pid "
                "JOIN pg_class c ON c.oid = l.relation "
                "WHERE a.application_name = :app AND a.xact_start IS NOT NULL "
                "AND c.relname = :table AND l.mode = 'RowShareLock'"
            ),
            {"app": f"dispatch-engine {name}", "table": table},
        )
        return int(found.scalar_one())


async def _sessions_of(context: AppContext, name: str) -> int:
    async with context.sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :app"),
            {"app": f"dispatch-engine {name}"},
        )
        return int(found.scalar_one())


async def _freeze_mid_transaction(context: AppContext, process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP the worker at a moment when it holds claimed messages in an open transaction
    (and no relay round: a push's claim is bounded by the relay's longer lease)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await _open_transactions(context, "frozen"):
            os.kill(process.pid, signal.SIGSTOP)
            await asyncio.sleep(0.2)  # a statement under way finishes; the locks stay
            if await _open_transactions(context, "frozen") and not await _open_transactions(
                context, "frozen", "outbox"
            ):
                return
            os.kill(process.pid, signal.SIGCONT)
        await asyncio.sleep(0.005)
    pytest.fail("the worker never held a claim transaction open")


def stop(*processes: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL whatever did not exit: no worker outlives its test."""
    for process in processes:
        if process is not None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def _progress(context: AppContext) -> tuple[int, int]:
    async with context.sessions() as session:
        queued = (
            await session.execute(select(func.count()).select_from(LocalQueueMessage))
        ).scalar_one()
        unpushed = (
            await session.execute(select(func.count()).select_from(OutboxEntry))
        ).scalar_one()
    return int(queued), int(unpushed)


async def test_a_frozen_worker_loses_its_claim_after_the_lease_and_writes_nothing_after(
    client: httpx.AsyncClient, admin: dict[str, str], context: AppContext, tmp_path: Path
) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("several workers need PostgreSQL (SQLite runs one worker)")
    from dispatch_engine.clock import SystemClock

    context.clock = SystemClock()
    await setup_account(client, admin)
    dispatch = await send_now_dispatch(client, admin, fatigue={"pending_token": {"enabled": False}})
    contacts = [{"email": f"f{i}@example.com"} for i in range(CONTACTS)]
    response = await client.post(
        f"/v1/accounts/acme/dispatches/{dispatch['id']}/contacts",
        headers=admin,
        json={"contacts": contacts},
    )
    assert response.json()["counts"]["accepted"] == CONTACTS

    url = context.settings.effective_database_url
    frozen = _worker(url, "frozen", tmp_path / "frozen.log")
    other: subprocess.Popen[bytes] | None = None
    try:
        await _freeze_mid_transaction(context, frozen)
        frozen_at = time.monotonic()
        other = _worker(url, "other", tmp_path / "other.log")
        # Everything reaches the queue while the first worker is still frozen (3 × lease):
        # its claim ended when PostgreSQL closed its idle transaction.
        released_after = None
        while time.monotonic() - frozen_at < 3 * LEASE:
            if released_after is None and not await _open_transactions(context, "frozen"):
                released_after = time.monotonic() - frozen_at
            queued, unpushed = await _progress(context)
            if queued >= CONTACTS and unpushed == 0:
                break
            await asyncio.sleep(0.2)
        assert released_after is not None and released_after <= LEASE + 2, released_after
        assert await _progress(context) == (CONTACTS, 0), "the frozen worker held messages"
        assert await _sessions_of(context, "frozen") < 3  # its idle sessions were ended
        os.kill(frozen.pid, signal.SIGCONT)
        await asyncio.sleep(2 * LEASE)  # the woken worker runs on: nothing left to write
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        stop(frozen, other)

    async with context.sessions() as session:
        sent = (
            await session.execute(
                select(func.count()).select_from(Message).where(Message.state == "sent")
            )
        ).scalar_one()
        queue_ids = list((await session.execute(select(LocalQueueMessage.message_id))).scalars())
    assert sent == CONTACTS
    assert len(queue_ids) == len(set(queue_ids)) == CONTACTS
