"""Policies and their lineups, and the set-based edits a lineup change makes to messages not
yet sent (R-POL-7, R-POL-8). Each function runs inside the caller's transaction (no commit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import Invite, LineupMessage, Message, Policy
from dispatch_engine.models.base import table_of
from dispatch_engine.store.decisions import insert_decisions, record_for_messages
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

WAITING = ("pending", "deferred")
RETIME_CHUNK = 5_000


# --- policies -------------------------------------------------------------------------------


async def find_policy(
    session: AsyncSession, policy_id: str, *, lock: bool = False
) -> Policy | None:
    """The policy by id, deleted or not, of any account; `lock` takes its row lock (PostgreSQL)
    so edits of one policy and dispatch creation on it happen one at a time."""
    return await session.get(Policy, policy_id, with_for_update=lock or None)


POLICY_ORDER = (Key(Policy.is_sandbox, descending=True), Key(Policy.created_at), Key(Policy.id))


async def live_policies_of_account(
    session: AsyncSession, account_id: str, page: PageRequest
) -> Page:
    """A page of the live policies, the sandbox first, then by creation."""
    query = select(Policy).where(Policy.account_id == account_id, Policy.deleted_at.is_(None))
    return await page_of(session, query, POLICY_ORDER, page)


async def count_live_policies_named(
    session: AsyncSession, account_id: str, name_key: str, except_id: str | None = None
) -> int:
    """Live policies of the account whose case-folded name is `name_key` (but `except_id`)."""
    query = select(func.count()).where(
        Policy.account_id == account_id,
        Policy.name_key == name_key,
        Policy.deleted_at.is_(None),
    )
    if except_id:
        query = query.where(Policy.id != except_id)
    return int((await session.execute(query)).scalar_one())


async def lock_sandbox_policy(session: AsyncSession, account_id: str) -> Policy:
    """The account's sandbox policy, row-locked (every account has exactly one)."""
    return (
        await session.execute(
            select(Policy)
            .where(Policy.account_id == account_id, Policy.is_sandbox)
            .with_for_update()
        )
    ).scalar_one()


# --- lineups --------------------------------------------------------------------------------


async def live_lineup(session: AsyncSession, policy_id: str) -> list[LineupMessage]:
    """The policy's live lineup messages, by position."""
    rows = await session.execute(
        select(LineupMessage)
        .where(LineupMessage.policy_id == policy_id, LineupMessage.deleted_at.is_(None))
        .order_by(LineupMessage.position)
    )
    return list(rows.scalars())


async def live_lineups(
    session: AsyncSession, policy_ids: Sequence[str]
) -> dict[str, list[LineupMessage]]:
    """Lineups of several policies in one query (listing pages)."""
    result: dict[str, list[LineupMessage]] = {pid: [] for pid in policy_ids}
    if not policy_ids:
        return result
    rows = await session.execute(
        select(LineupMessage)
        .where(LineupMessage.policy_id.in_(policy_ids), LineupMessage.deleted_at.is_(None))
        .order_by(LineupMessage.policy_id, LineupMessage.position)
    )
    for message in rows.scalars():
        result[message.policy_id].append(message)
    return result


async def find_lineup_message(session: AsyncSession, message_id: str) -> LineupMessage | None:
    """A lineup message by id, deleted or not, of any policy."""
    return await session.get(LineupMessage, message_id)


async def shift_positions(
    session: AsyncSession, policy_id: str, from_position: int, by: int
) -> None:
    """Live lineup messages at `from_position` or later move by `by` places."""
    await session.execute(
        update(LineupMessage)
        .where(
            LineupMessage.policy_id == policy_id,
            LineupMessage.deleted_at.is_(None),
            LineupMessage.position >= from_position,
        )
        .values(position=LineupMessage.position + by)
        .execution_options(synchronize_session="fetch")
    )


# --- live edits reach messages not yet sent -------------------------------------------------


DueTimeOf = Callable[[datetime, str | None], datetime]
"""(the instant a message's delay counts from, its contact's time zone) → its due time."""


async def retime_step(
    session: AsyncSession,
    lineup_message_id: str,
    due_of: DueTimeOf,
    *,
    now: datetime | None = None,
    policy_version: int | None = None,
) -> int:
    """A step's delay changed: its messages not yet sent get the due time the new delay
    gives (`due_of`, the one delay rule), at once.

    A delay counts from when the contact file was received for an invite's first message
    (created by the upload, with the invite) and from when the previous message was sent or
    skipped for the others (created at that moment, so their `created_at` is it). Resends
    keep their time: an operator sent them again, now. Waiting messages are decided again
    at their new time; held (paused) ones keep waiting for the resume but carry the new
    time with them.

    Given `now`, each gets a `retimed` decision in the trace (until its new due time),
    under `policy_version` (the version the edit makes), in one bulk insert.
    """
    rows = (
        await session.execute(
            select(
                Message.id,
                Message.invite_id,
                Message.state,
                Message.reason,
                Message.created_at,
                Invite.created_at,
                Invite.received_at,
                Invite.time_zone,
            )
            .join(Invite, Invite.id == Message.invite_id)
            .where(
                Message.lineup_message_id == lineup_message_id,
                Message.state.in_((*WAITING, "held")),
                Message.resend_of.is_(None),
            )
        )
    ).all()
    table = table_of(Message)
    statement = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            due_at=bindparam("due"),
            not_before=bindparam("due"),
            state=bindparam("next_state"),
            rule=bindparam("next_rule"),
            reason=bindparam("next_reason"),
        )
    )
    params: list[dict[str, Any]] = []
    trace: list[tuple[Any, ...]] = []
    for row in rows:
        mid, invite_id, state, reason, created_at, invite_created_at, received_at, zone = row
        held = state == "held"
        # The upload writes an invite and its first message with one `created_at`.
        counts_from = received_at if created_at == invite_created_at else created_at
        due = due_of(counts_from, zone)
        if now is not None:
            decided = (mid, invite_id, now, "retimed", "lineup_edit", "delay_changed", due)
            trace.append((*decided, policy_version, None))
        params.append(
            {
                "b_id": mid,
                "due": due,
                "next_state": "held" if held else "pending",
                "next_rule": "paused" if held else None,
                "next_reason": reason if held else None,
            }
        )
    for start in range(0, len(params), RETIME_CHUNK):
        await session.execute(statement, params[start : start + RETIME_CHUNK])
    await insert_decisions(session, trace)
    return len(params)


async def change_step_channel(session: AsyncSession, lineup_message_id: str, channel: str) -> int:
    """A step's channel changed: its messages not yet sent go out on the new channel."""
    result = await session.execute(
        update(Message)
        .where(
            Message.lineup_message_id == lineup_message_id,
            Message.state.in_((*WAITING, "held")),
        )
        .values(channel=channel)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def skip_deleted_step(session: AsyncSession, lineup_message_id: str, now: datetime) -> int:
    """A deleted step's waiting messages are looked at now: they end `step_deleted` and their
    invites move on to the next step."""
    result = await session.execute(
        update(Message)
        .where(Message.lineup_message_id == lineup_message_id, Message.state.in_(WAITING))
        .values(not_before=now, state="pending")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def redo_business_deferrals(
    session: AsyncSession, policy_id: str, now: datetime, *, policy_version: int | None = None
) -> int:
    """Business rules changed: every message deferred by the old window is decided again
    now, under the new window (its original due time still orders it). Each gets a
    `retimed` decision in the trace (until now), under `policy_version` (the version the
    edit makes; None: the version stored now)."""
    await record_for_messages(
        session,
        now,
        "retimed",
        Message.policy_id == policy_id,
        Message.state == "deferred",
        Message.rule == "business_window",
        rule="business_window",
        reason="business_rules_changed",
        until=now,
        policy_version=policy_version,
    )
    result = await session.execute(
        update(Message)
        .where(
            Message.policy_id == policy_id,
            Message.state == "deferred",
            Message.rule == "business_window",
        )
        .values(not_before=now, state="pending")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
