"""The decision trace (`message_decisions`): written with each decision, in the caller's
transaction and set-based (a COPY per engine batch; `INSERT … SELECT` on the same condition
as a set-based edit), read per invite by the lookup, pruned by the maintenance job.

Rows hold no personal data (ids, times, slugs, a version, a worker id), so erasing a
contact's data leaves them; they go with the retention setting (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import insert_records, member_of
from dispatch_engine.db.types import UTCDateTime
from dispatch_engine.models import Dispatch, Message, MessageDecision, Policy
from dispatch_engine.models.base import table_of

COLUMNS = (
    "message_id",
    "invite_id",
    "at",
    "kind",
    "rule",
    "reason",
    "until",
    "policy_version",
    "worker",
)


async def insert_decisions(session: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
    """A batch's decisions, each a tuple in `COLUMNS` order: COPY on PostgreSQL."""
    await insert_records(session, table_of(MessageDecision), COLUMNS, rows)


def _of_messages(
    now: datetime,
    kind: str,
    *conditions: ColumnElement[bool],
    rule: Any = None,
    reason: Any = None,
    until: Any = None,
    worker: str | None = None,
    policy_version: int | None = None,
) -> Select[Any]:
    """One decision row per message matching `conditions`, with `policy_version` or else
    the version of the policy that governs it now (its dispatch's: dispatches can move)."""
    version: Any = (
        literal(policy_version)
        if policy_version is not None
        else select(Policy.version)
        .join(Dispatch, Dispatch.policy_id == Policy.id)
        .where(Dispatch.id == Message.dispatch_id)
        .scalar_subquery()
    )
    return select(
        Message.id,
        Message.invite_id,
        literal(now, UTCDateTime()),
        literal(kind),
        rule if rule is not None else literal(None),
        reason if reason is not None else literal(None),
        until if until is not None else literal(None, UTCDateTime()),
        version,
        literal(worker),
    ).where(*conditions)


async def record_for_messages(
    session: AsyncSession,
    now: datetime,
    kind: str,
    *conditions: ColumnElement[bool],
    rule: Any = None,
    reason: Any = None,
    until: Any = None,
    worker: str | None = None,
    policy_version: int | None = None,
) -> None:
    """`INSERT … SELECT`: a `kind` decision for every message matching `conditions` (run
    before the set-based UPDATE that makes it, on the same condition). `rule`, `reason`,
    `until`: a plain value or a column expression of `messages`."""
    query = _of_messages(
        now,
        kind,
        *conditions,
        rule=_value(rule),
        reason=_value(reason),
        until=_value(until, UTCDateTime()),
        worker=worker,
        policy_version=policy_version,
    )
    table = table_of(MessageDecision)
    await session.execute(table.insert().from_select(list(COLUMNS), query))


def _value(value: Any, type_: Any = None) -> Any:
    if value is None or isinstance(value, ColumnElement) or hasattr(value, "__clause_element__"):
        return value
    return literal(value, type_) if type_ is not None else literal(value)


async def decisions_of_invites(
    session: AsyncSession, invite_ids: Sequence[str]
) -> list[MessageDecision]:
    """Every decision on these invites' messages, in order (time, then insertion)."""
    if not invite_ids:
        return []
    rows = await session.execute(
        select(MessageDecision)
        .where(member_of(session, MessageDecision.invite_id, invite_ids))
        .order_by(MessageDecision.invite_id, MessageDecision.at, MessageDecision.id)
    )
    return list(rows.scalars())


async def prune_decisions(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` of the oldest decisions (by key: insertion order) made before
    `before`; returns how many. Rows are written at their decision time, so key order is
    time order give or take concurrent batches: a newer row among the oldest keys stops the
    walk early (it is kept), never deletes anything recent."""
    oldest = select(MessageDecision.id).order_by(MessageDecision.id).limit(limit).subquery()
    result = await session.execute(
        delete(MessageDecision)
        .where(MessageDecision.id.in_(select(oldest.c.id)), MessageDecision.at < before)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
