"""Batch lookups for the rule pipeline: one query per kind of fact per batch, never per message.

The delivery engine (`delivery/engine.py`) reads every fact a claimed batch needs through
these functions; `delivery/facts.py` turns them into each message's `MessageFacts`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Executable, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import member_of
from dispatch_engine.db.dialect import advisory_xact_locks
from dispatch_engine.models import (
    Dispatch,
    FatigueLedger,
    Invite,
    LineupMessage,
    Message,
    OperatorPause,
    Policy,
    Unsubscribe,
)
from dispatch_engine.models.base import Base, table_of


@dataclass
class BatchFacts:
    """Rows every message of a claimed batch refers to, keyed by id."""

    messages: list[Message]
    invites: dict[str, Invite]
    dispatches: dict[str, Dispatch]
    policies: dict[str, Policy]
    steps: dict[str, LineupMessage]  # lineup messages referenced, live or deleted
    live_lineups: dict[str, list[LineupMessage]]  # policy id → live steps in order
    paused_accounts: set[str]
    paused_channels: set[str]
    paused_dispatches: set[str]  # by an operator pause (a dispatch's own status is separate)
    paused_policies: set[str]
    unsubscribed: set[tuple[str, str, str]] = field(default_factory=set)
    lock_holders: dict[str, Invite] = field(default_factory=dict)
    ledger: dict[str, list[FatigueLedger]] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)  # policy id → PolicyRules (facts.py)
    steps_shared: dict[tuple[str, ...], Any] = field(default_factory=dict)  # → StepFacts
    invites_with_later_steps: set[str] = field(default_factory=set)  # (for resends)


class _HasId(Protocol):
    id: str


RowT = TypeVar("RowT", bound=_HasId)
ModelT = TypeVar("ModelT", bound=Base)


def _by_id(rows: Iterable[RowT]) -> dict[str, RowT]:
    return {row.id: row for row in rows}


# The columns the rules and the batch writer read (delivery/facts.py, delivery/engine.py).
# Each column left out is a value asyncpg does not decode, thousands of times per batch.
MESSAGE_FACT_COLUMNS = (
    "id",
    "invite_id",
    "account_id",
    "dispatch_id",
    "policy_id",
    "lineup_message_id",
    "position",
    "channel",
    "priority",
    "due_at",
    "not_before",
    "attempts",
    "resend_of",
)
INVITE_FACT_COLUMNS = (
    "id",
    "questionnaire_id",
    "token",
    "sandbox",
    "uuid_hash",
    "fatigue_lock",
    "email_hash",
    "mobile_hash",
    "time_zone",
    "contact",
    "valid_until",
    "first_sent_at",
    "responded_at",
)
LEDGER_FACT_COLUMNS = (
    "policy_id",
    "fatigue_epoch",
    "questionnaire_id",
    "uuid_hash",
    "sandbox",
    "sent_at",
)


# The order messages are claimed and decided in: sandbox first, then by due time. The
# claim returns its rows in it, and a batch read again by ids is put back in it.
DUE_ORDER = (Message.priority, Message.not_before, Message.due_at, Message.id)


def fact_columns(model: type[ModelT], names: Sequence[str]) -> list[Any]:
    """The model table's columns called `names`, for a plain-row select."""
    table = table_of(model)
    return [table.c[name] for name in names]


def _snapshot_rows(model: type[ModelT], columns: Sequence[str]) -> Select[Any]:
    """Plain rows shaped like the model (same attribute names, only `columns`), read-only:
    the hot path skips ORM identity bookkeeping for the thousands of rows per batch."""
    return select(*fact_columns(model, columns))


async def core_rows(session: AsyncSession, query: Executable) -> list[Any]:
    """Run a column query on the session's connection, past the ORM's result layer: its
    per-row loading work costs more than the rest of reading a batch's wide rows."""
    result = await (await session.connection()).execute(query)
    return list(result.all())


async def load_batch_facts(
    session: AsyncSession, ids: Sequence[str], messages: Sequence[Any] | None = None
) -> BatchFacts:
    """`messages`: the rows of `ids` already read under this transaction's locks, in claim
    order (the fast path's claim returns them); read here otherwise."""
    if messages is None:
        messages = await core_rows(
            session,
            _snapshot_rows(Message, MESSAGE_FACT_COLUMNS)
            .where(member_of(session, Message.id, ids))
            .order_by(*DUE_ORDER),
        )
    messages = cast(list[Message], list(messages))
    invite_ids = {m.invite_id for m in messages}
    dispatch_ids = {m.dispatch_id for m in messages}
    invite_rows = await core_rows(
        session,
        _snapshot_rows(Invite, INVITE_FACT_COLUMNS).where(
            member_of(session, Invite.id, invite_ids)
        ),
    )
    invites = _by_id(cast(list[Invite], invite_rows))
    dispatches = _by_id(
        (
            await session.execute(
                select(Dispatch).where(member_of(session, Dispatch.id, dispatch_ids))
            )
        ).scalars()
    )
    policy_ids = {d.policy_id for d in dispatches.values()} | {m.policy_id for m in messages}
    policies = _by_id(
        (
            await session.execute(select(Policy).where(member_of(session, Policy.id, policy_ids)))
        ).scalars()
    )
    step_rows = (
        await session.execute(
            select(LineupMessage).where(
                member_of(session, LineupMessage.policy_id, policy_ids)
                | member_of(session, LineupMessage.id, {m.lineup_message_id for m in messages})
            )
        )
    ).scalars()
    steps: dict[str, LineupMessage] = {}
    live: dict[str, list[LineupMessage]] = defaultdict(list)
    for step in step_rows:
        steps[step.id] = step
        if step.deleted_at is None:
            live[step.policy_id].append(step)
    for lineup in live.values():
        lineup.sort(key=lambda s: s.position or 0)
    account_ids = {m.account_id for m in messages}
    pauses = (
        await session.execute(
            select(OperatorPause.scope, OperatorPause.target).where(
                OperatorPause.lifted_at.is_(None)
            )
        )
    ).all()
    paused_accounts = {t for s, t in pauses if s == "account" and t in account_ids}
    paused_channels = {t for s, t in pauses if s == "channel"}
    paused_dispatches = {t for s, t in pauses if s == "dispatch" and t in dispatches}
    paused_policies = {t for s, t in pauses if s == "policy" and t in policies}
    return BatchFacts(
        messages=messages,
        invites=invites,
        dispatches=dispatches,
        policies=policies,
        steps=steps,
        live_lineups=dict(live),
        paused_accounts=paused_accounts,
        paused_channels=paused_channels,
        paused_dispatches=paused_dispatches,
        paused_policies=paused_policies,
    )


async def load_unsubscribes(
    session: AsyncSession, wanted: set[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """(account, channel, address hash) triples that are unsubscribed, in one query."""
    if not wanted:
        return set()
    hashes = {h for _, _, h in wanted}
    rows = await core_rows(
        session,
        select(Unsubscribe.account_id, Unsubscribe.channel, Unsubscribe.address_hash).where(
            member_of(session, Unsubscribe.address_hash, hashes)
        ),
    )
    return {(a, c, h) for a, c, h in rows} & wanted


async def load_lock_holders(session: AsyncSession, keys: set[str]) -> dict[str, Invite]:
    """Fatigue rule 1: which invite holds each person's pending-token lock."""
    if not keys:
        return {}
    # Only what rule 1 reads of a holder: who it is and whether its token still counts.
    rows = await core_rows(
        session,
        select(Invite.id, Invite.fatigue_lock, Invite.responded_at, Invite.valid_until).where(
            member_of(session, Invite.fatigue_lock, keys)
        ),
    )
    holders = cast(list[Invite], rows)
    return {invite.fatigue_lock: invite for invite in holders if invite.fatigue_lock}


async def load_ledger(
    session: AsyncSession, hashes: set[str], since: datetime
) -> dict[str, list[FatigueLedger]]:
    """Fatigue rule 2: invites sent per person hash since the earliest cut-off in the batch."""
    if not hashes:
        return {}
    rows = await core_rows(
        session,
        _snapshot_rows(FatigueLedger, LEDGER_FACT_COLUMNS).where(
            member_of(session, FatigueLedger.uuid_hash, hashes), FatigueLedger.sent_at >= since
        ),
    )
    ledger: dict[str, list[FatigueLedger]] = defaultdict(list)
    for row in cast(list[FatigueLedger], rows):
        ledger[row.uuid_hash].append(row)
    return dict(ledger)


def person_lock_id(uuid_hash: str) -> int:
    """A signed 64-bit advisory-lock id for one person (their keyed hash is already uniform)."""
    digest = uuid_hash.rpartition(":")[2]
    return int(digest[:16], 16) - (1 << 63) if len(digest) >= 16 else hash(digest)


async def lock_people(session: AsyncSession, hashes: set[str]) -> None:
    """Serialise fatigue rule 2 per person across concurrent rounds and workers.

    Rule 2 counts ledger rows, which a concurrent round may be about to add for the same
    person; a transaction-scoped advisory lock per person, taken before the ledger is read
    and in one global order (no deadlock), makes the second round read the first's sends.
    SQLite needs nothing: its write-back transactions never overlap (BEGIN IMMEDIATE).
    """
    if hashes:
        await advisory_xact_locks(session, map(person_lock_id, hashes))


__all__ = [
    "DUE_ORDER",
    "MESSAGE_FACT_COLUMNS",
    "BatchFacts",
    "core_rows",
    "dnd_webhooks_of_dispatches",
    "dnd_webhooks_of_messages",
    "fact_columns",
    "invites_with_later_steps",
    "load_batch_facts",
    "load_ledger",
    "load_lock_holders",
    "load_unsubscribes",
    "lock_people",
    "person_lock_id",
]


async def invites_with_later_steps(session: AsyncSession, resends: Sequence[Message]) -> set[str]:
    """Invites of resent messages that already have a message at a later lineup position
    (only resends need this; one query, usually skipped)."""
    if not resends:
        return set()
    found: set[str] = set()
    rows = await session.execute(
        select(Message.invite_id, Message.position).where(
            member_of(session, Message.invite_id, {m.invite_id for m in resends})
        )
    )
    latest: dict[str, int] = {}
    for invite_id, position in rows.all():
        latest[invite_id] = max(latest.get(invite_id, 0), position)
    for message in resends:
        if latest.get(message.invite_id, 0) > message.position:
            found.add(message.invite_id)
    return found


async def dnd_webhooks_of_dispatches(session: AsyncSession, dispatch_ids: set[str]) -> bool:
    """One cheap query: does the policy of any of these dispatches have a DND webhook?"""
    return await _any_dnd_webhook(session, member_of(session, Dispatch.id, dispatch_ids))


async def dnd_webhooks_of_messages(session: AsyncSession, message_ids: list[str]) -> bool:
    """The same question for the dispatches of these messages (one query, a subquery)."""
    dispatch_ids = select(Message.dispatch_id).where(member_of(session, Message.id, message_ids))
    return await _any_dnd_webhook(session, Dispatch.id.in_(dispatch_ids))


async def _any_dnd_webhook(session: AsyncSession, of_dispatches: Any) -> bool:
    policy_ids = select(Dispatch.policy_id).where(of_dispatches)
    webhooks = await session.execute(
        select(Policy.dnd_webhooks).where(Policy.id.in_(policy_ids.distinct()))
    )
    return any(any(hooks.values()) for hooks in webhooks.scalars() if hooks)
