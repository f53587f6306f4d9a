"""SIGTERM: a worker stops claiming, finishes what it holds, returns its leases and exits
within its grace period; another worker then finishes the rest exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dispatch_engine.context import AppContext
from dispatch_engine.models import LocalQueueMessage, Message
from tests.conftest import ENCRYPTION_KEYS, HMAC_KEYS, setup_account

CLI = str(Path(sys.executable).with_name("dispatch-engine"))
ALL_WEEK = {
    d: [{"start": "00:00", "end": "24:00"}]
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}
CONTACTS = 4000
GRACE = 5.0


def _worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DISPATCH_DATABASE_URL": url,
        "DISPATCH_ENCRYPTION_KEYS": ENCRYPTION_KEYS,
        "DISPATCH_HMAC_KEYS": HMAC_KEYS,
        "DISPATCH_DATA_DIR": str(log.parent),
        "DISPATCH_CLAIM_BATCH_SIZE": "100",
        "DISPATCH_CLAIM_INTERVAL_SECONDS": "0.1",
        "DISPATCH_RELAY_INTERVAL_SECONDS": "0.1",
        "DISPATCH_CLAIM_LEASE_SECONDS": "300",
    }
    return subprocess.Popen(
        [CLI, "worker", "--grace", str(GRACE)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
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
    policy = (
        await client.post(
            "/v1/accounts/acme/policies",
            headers=admin,
            json={
                "name": "Now",
                "lineup": [{"channel": "email", "delay": "PT0S"}],
                "business_rules": {"time_zone": "UTC", "days": ALL_WEEK},
                "fatigue": {"pending_token": {"enabled": False}},
            },
        )
    ).json()
    dispatch = (
        await client.post(
            "/v1/accounts/acme/dispatches",
            headers=admin,
            json={
                "questionnaire_id": "q",
                "policy_id": policy["id"],
                "token_validity": "P7D",
                "message_templates": {policy["lineup"][0]["id"]: "tpl"},
            },
        )
    ).json()
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
