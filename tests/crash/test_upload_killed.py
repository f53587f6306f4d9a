"""`kill -9` of `dispatch-engine api` in the middle of a contact file (issue 18.2).

The Idempotency-Key must not be dead for good: a retry after the upload's lease takes the
key over and stores the rest of the file, nothing twice (rows with and without external
ids), and the killed request's batch says `interrupted` with what it had stored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from dispatch_engine.clock import SystemClock
from dispatch_engine.context import AppContext
from dispatch_engine.models import ContactBatch, Invite
from tests.conftest import setup_account
from tests.helpers import make_dispatch
from tests.procs import free_port, start_api

ROWS = 3000
CHUNK_ROWS = 200
LEASE = 3


def contact_file() -> list[bytes]:
    """Every other row without an external id: those can only be told apart by position."""
    lines = [b"email,external_id\n"]
    for n in range(ROWS):
        external_id = f"k-{n}" if n % 2 else ""
        lines.append(f"person-{n}@example.com,{external_id}\n".encode())
    return lines


async def wait_until_up(base: str) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("the API did not start")


async def stored_rows(context: AppContext, dispatch_id: str) -> int:
    async with context.sessions() as session:
        found = await session.execute(
            select(func.coalesce(func.sum(ContactBatch.rows_total), 0)).where(
                ContactBatch.dispatch_id == dispatch_id
            )
        )
        return int(found.scalar_one())


async def test_a_retry_after_the_api_was_killed_mid_file_finishes_the_upload(
    client: httpx.AsyncClient, admin: dict[str, str], context: AppContext, tmp_path: Path
) -> None:
    context.clock = SystemClock()  # the API processes run on real time
    await setup_account(client, admin)
    _, dispatch = await make_dispatch(
        client, admin, questionnaire="q-kill", fatigue={"pending_token": {"enabled": False}}
    )
    dispatch_id = dispatch["id"]
    url = context.settings.effective_database_url
    settings = {"upload_batch_rows": str(CHUNK_ROWS), "upload_lease_seconds": str(LEASE)}
    lines = contact_file()
    headers = {**admin, "Content-Type": "text/csv", "Idempotency-Key": "file-kill-1"}
    path = f"/v1/accounts/acme/dispatches/{dispatch_id}/contacts"

    port = free_port()
    first = start_api(url, tmp_path / "api-1.log", port, **settings)
    base = f"http://127.0.0.1:{port}"
    killed = asyncio.Event()

    async def slow_half() -> AsyncIterator[bytes]:
        """Half the file, then nothing more until the process is gone."""
        for line in lines[: ROWS // 2]:
            yield line
        while await stored_rows(context, dispatch_id) < CHUNK_ROWS:
            await asyncio.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        killed.set()
        await asyncio.sleep(5)
        yield b""

    try:
        await wait_until_up(base)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(path, headers=headers, content=slow_half())
        assert killed.is_set()
    finally:
        first.kill()
        first.wait(timeout=10)
    stored = await stored_rows(context, dispatch_id)
    assert 0 < stored < ROWS

    port = free_port()
    second = start_api(url, tmp_path / "api-2.log", port, **settings)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base)
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            answer = await http.post(path, headers=headers, content=b"".join(lines))
            # The dead request's lease may still run: then the key is in flight, for now.
            deadline = time.monotonic() + 3 * LEASE
            while answer.status_code == 409 and time.monotonic() < deadline:
                assert answer.json()["type"].endswith(":idempotency-in-flight")
                await asyncio.sleep(0.5)
                answer = await http.post(path, headers=headers, content=b"".join(lines))
            assert answer.status_code == 202, answer.text
            body: dict[str, Any] = answer.json()
            assert body["counts"] == {
                "rows": ROWS,
                "accepted": ROWS,
                "rejected": 0,
                "duplicates": 0,
            }
            dead_id = body["resumed_from"]
            assert dead_id
            dead = (await http.get(f"/v1/accounts/acme/batches/{dead_id}", headers=admin)).json()
            assert dead["status"] == "interrupted"
            assert dead["counts"]["rows"] == dead["counts"]["accepted"] == stored
            assert dead["finished_at"] is not None

            # The same key again: the stored answer, nothing more.
            replay = await http.post(path, headers=headers, content=b"".join(lines))
            assert replay.status_code == 202
            assert replay.headers["Idempotent-Replayed"] == "true"
            assert replay.json() == body
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=15)
        except subprocess.TimeoutExpired:
            second.kill()

    async with context.sessions() as session:
        invites = await session.execute(
            select(func.count(), func.count(func.distinct(Invite.row_number))).where(
                Invite.dispatch_id == dispatch_id
            )
        )
        total, distinct_rows = invites.one()
    assert total == distinct_rows == ROWS  # every row once: none lost, none twice
