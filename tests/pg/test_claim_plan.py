"""The claim query is served by the claim index, not by a scan and sort of every message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dispatch_engine.context import AppContext
from dispatch_engine.db.bulk import asyncpg_connection, insert_rows
from dispatch_engine.models import Message
from dispatch_engine.models.base import table_of
from dispatch_engine.store.messages import _due_candidates

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
MESSAGES = 20_000


def _message(n: int) -> dict[str, object]:
    due = NOW - timedelta(seconds=n % 600)
    return {
        "id": f"m_{n:012d}",
        "invite_id": f"inv_{n:012d}",
        "account_id": "acme",
        "dispatch_id": "dsp_1",
        "policy_id": "pol_1",
        "lineup_message_id": "lm_1",
        "position": 1,
        "channel": "email",
        "priority": 1,
        # Mostly sent messages, as in a dispatch that has been running a while.
        "state": "pending" if n % 10 == 0 else "sent",
        "due_at": due,
        "not_before": due,
        "attempts": 0,
        "created_at": NOW,
    }


def _nodes(plan: dict[str, object]) -> list[dict[str, object]]:
    found = [plan]
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        found += _nodes(child)
    return found


async def test_the_claim_query_uses_the_claim_index(context: AppContext) -> None:
    if context.engine.dialect.name != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    async with context.sessions() as session, session.begin():
        await insert_rows(session, table_of(Message), [_message(n) for n in range(MESSAGES)])
    async with context.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("ANALYZE messages")
    async with context.sessions() as session, session.begin():
        query = _due_candidates(session, NOW, 500).compile(
            dialect=context.engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        arguments = [query.params[name] for name in query.positiontup or ()]
        driver = await asyncpg_connection(session)
        answer = await driver.fetchval(f"EXPLAIN (FORMAT JSON) {query.string}", *arguments)
    plan = (json.loads(answer) if isinstance(answer, str) else answer)[0]["Plan"]
    nodes = _nodes(plan)
    shown = json.dumps(plan, indent=1)
    # An ordered walk of the claim index feeds the limit: no sort of every due message.
    assert [n["Node Type"] for n in nodes] == ["Limit", "LockRows", "Index Scan"], shown
    assert nodes[-1]["Index Name"] == "ix_messages_claimable", shown
