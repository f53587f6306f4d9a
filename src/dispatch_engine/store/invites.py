"""Invites and their messages as the API reads and stops them, and the contact batches they
were uploaded in (no commit here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import Dispatch, Invite, Message, Policy
from dispatch_engine.store.decisions import record_for_messages
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

PENDING_STATES = ("pending", "deferred", "held")


# --- invites --------------------------------------------------------------------------------


async def find_invite(session: AsyncSession, invite_id: str) -> Invite | None:
    """The invite by id, of any account."""
    return await session.get(Invite, invite_id)


async def invite_of_token(session: AsyncSession, account_id: str, token: str) -> Invite | None:
    return (
        await session.execute(
            select(Invite).where(Invite.token == token, Invite.account_id == account_id)
        )
    ).scalar_one_or_none()


@dataclass(frozen=True)
class InviteFilter:
    """What a list of an account's invites narrows by; None means any. `reason` matches the
    invite's end reason or any of its messages' reasons (why it was not sent); `since` and
    `until` bound when EM gave the contact (`received_at`, until exclusive)."""

    account_id: str
    token: str | None = None
    external_id: str | None = None
    dispatch_id: str | None = None
    batch_id: str | None = None
    state: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None


INVITE_ORDER = (Key(Invite.id),)  # time-ordered ids: upload by upload (not row by row)


def _matching(f: InviteFilter) -> Select[Any]:
    query = select(Invite).where(Invite.account_id == f.account_id)
    equal = {
        Invite.token: f.token,
        Invite.external_id: f.external_id,
        Invite.dispatch_id: f.dispatch_id,
        Invite.batch_id: f.batch_id,
        Invite.state: f.state,
    }
    for column, value in equal.items():
        if value is not None:
            query = query.where(column == value)
    if f.reason is not None:
        message_said_so = exists().where(Message.invite_id == Invite.id, Message.reason == f.reason)
        query = query.where(or_(Invite.end_reason == f.reason, message_said_so))
    if f.since is not None:
        query = query.where(Invite.received_at >= f.since)
    if f.until is not None:
        query = query.where(Invite.received_at < f.until)
    return query


async def invites_page(session: AsyncSession, f: InviteFilter, page: PageRequest) -> Page:
    """A page of the account's invites that match `f`, in id order."""
    return await page_of(session, _matching(f), INVITE_ORDER, page)


async def messages_of_invites(session: AsyncSession, invite_ids: Sequence[str]) -> list[Message]:
    """Every message of these invites, in creation order."""
    rows = await session.execute(
        select(Message)
        .where(Message.invite_id.in_(list(invite_ids)))
        .order_by(Message.created_at, Message.position, Message.id)
    )
    return list(rows.scalars())


async def business_rules_of_dispatches(
    session: AsyncSession, dispatch_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Dispatch id → the business rules of its policy (as stored), for the zone its
    invites' windows are read in."""
    rows = await session.execute(
        select(Dispatch.id, Policy.business_rules)
        .join(Policy, Policy.id == Dispatch.policy_id)
        .where(Dispatch.id.in_(list(dispatch_ids)))
    )
    return {dispatch_id: rules for dispatch_id, rules in rows.all()}


async def suppress_pending_messages(session: AsyncSession, invite_id: str, now: datetime) -> int:
    """The person answered: the invite's messages not yet sent end `responded` (a claim on
    them is void). Returns how many. Each gets its `suppressed` decision in the trace."""
    await record_for_messages(
        session,
        now,
        "suppressed",
        Message.invite_id == invite_id,
        Message.state.in_(PENDING_STATES),
        rule="responded",
        reason="responded",
    )
    stopped = await session.execute(
        update(Message)
        .where(Message.invite_id == invite_id, Message.state.in_(PENDING_STATES))
        .values(
            state="suppressed",
            rule="responded",
            reason="responded",
            decided_at=now,
            claim_token=None,
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(stopped.rowcount or 0)  # type: ignore[attr-defined]


# --- contact batches ------------------------------------------------------------------------
