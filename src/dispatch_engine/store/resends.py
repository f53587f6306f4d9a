"""Impacted sendings, approvals and resends of an incident (no commit here).

A sending is impacted while failed or delayed, or once withdrawn because it was re-sent
(state `suppressed`, rule `incident`, reason `superseded_by_resend`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import insert_rows
from dispatch_engine.db.leases import lease_free, lease_held
from dispatch_engine.models import (
    IncidentApproval,
    IncidentApprovalSending,
    IncidentResend,
    Invite,
    Message,
    OutboxEntry,
)
from dispatch_engine.models.base import table_of
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

IMPACTED_STATES = ("failed", "delayed")
WITHDRAWN_RULE = "incident"
WITHDRAWN_REASON = "superseded_by_resend"


@dataclass(frozen=True)
class ImpactedQuery:
    incident_id: str
    start: datetime
    end: datetime
    account: str | None = None
    channel: str | None = None


def impacted_condition() -> ColumnElement[bool]:
    """Failed or delayed — or withdrawn because it was re-sent."""
    return or_(
        Message.state.in_(IMPACTED_STATES),
        and_(
            Message.state == "suppressed",
            Message.rule == WITHDRAWN_RULE,
            Message.reason == WITHDRAWN_REASON,
        ),
    )


def _conditions(q: ImpactedQuery) -> list[ColumnElement[bool]]:
    conditions = [impacted_condition(), Message.due_at >= q.start, Message.due_at <= q.end]
    if q.account:
        conditions.append(Message.account_id == q.account)
    if q.channel:
        conditions.append(Message.channel == q.channel)
    return conditions


# --- impacted sendings --------------------------------------------------------------------


async def impacted_ids(session: AsyncSession, q: ImpactedQuery) -> list[str]:
    """Every impacted sending's id, by scheduled time."""
    query = select(Message.id).where(*_conditions(q)).order_by(Message.due_at, Message.id)
    return list((await session.execute(query)).scalars())


async def impacted_messages(
    session: AsyncSession, q: ImpactedQuery, after: tuple[str, datetime, str] | None, limit: int
) -> list[Message]:
    """Up to `limit` impacted sendings by (account, scheduled time, id), after `after`."""
    query = select(Message).where(*_conditions(q))
    if after is not None:
        account, due, last = after
        query = query.where(
            or_(
                Message.account_id > account,
                and_(Message.account_id == account, Message.due_at > due),
                and_(Message.account_id == account, Message.due_at == due, Message.id > last),
            )
        )
    query = query.order_by(Message.account_id, Message.due_at, Message.id).limit(limit)
    return list((await session.execute(query)).scalars())


async def resent_as(session: AsyncSession, message_ids: list[str]) -> dict[str, list[str]]:
    """Original message id -> the ids it was re-sent as, oldest first (empty list else)."""
    resent: dict[str, list[str]] = defaultdict(list)
    for original, new in await session.execute(
        select(IncidentResend.original_message_id, IncidentResend.new_message_id)
        .where(IncidentResend.original_message_id.in_(message_ids))
        .order_by(IncidentResend.created_at, IncidentResend.id)
    ):
        resent[original].append(new)
    return resent


# --- approvals ----------------------------------------------------------------------------


async def add_approval_sendings(
    session: AsyncSession, approval_id: str, message_ids: list[str]
) -> None:
    """The sendings an approval covers, one row each (COPY on PostgreSQL)."""
    await insert_rows(
        session,
        table_of(IncidentApprovalSending),
        [{"approval_id": approval_id, "message_id": m} for m in message_ids],
    )


APPROVAL_ORDER = (Key(IncidentApproval.recorded_at), Key(IncidentApproval.id))


async def approvals_of_incident(session: AsyncSession, incident_id: str, page: PageRequest) -> Page:
    """A page of the incident's approvals, oldest recorded first."""
    query = select(IncidentApproval).where(IncidentApproval.incident_id == incident_id)
    return await page_of(session, query, APPROVAL_ORDER, page)


async def sendings_of_approvals(
    session: AsyncSession, approval_ids: Collection[str]
) -> list[tuple[str, str]]:
    """(approval id, message id) of every sending the approvals cover, by message id."""
    rows = await session.execute(
        select(IncidentApprovalSending.approval_id, IncidentApprovalSending.message_id)
        .where(IncidentApprovalSending.approval_id.in_(approval_ids))
        .order_by(IncidentApprovalSending.message_id)
    )
    return [(approval_id, message_id) for approval_id, message_id in rows]


# --- what a resend is decided on ----------------------------------------------------------


async def messages_by_id(session: AsyncSession, ids: list[str]) -> dict[str, Message]:
    return {
        m.id: m
        for m in (await session.execute(select(Message).where(Message.id.in_(ids)))).scalars()
    }


async def erased_invite_ids(session: AsyncSession, invite_ids: Collection[str]) -> set[str]:
    """Those of `invite_ids` whose contact data has been erased."""
    return set(
        (
            await session.execute(
                select(Invite.id).where(Invite.id.in_(invite_ids), Invite.contact.is_(None))
            )
        ).scalars()
    )


async def covering_approvals(
    session: AsyncSession, incident_id: str, message_ids: list[str]
) -> list[tuple[str, str]]:
    """(message id, approval id) for each of the incident's approvals that covers one of
    `message_ids`, newest approval first."""
    rows = await session.execute(
        select(IncidentApprovalSending.message_id, IncidentApproval.id)
        .join(IncidentApproval, IncidentApproval.id == IncidentApprovalSending.approval_id)
        .where(
            IncidentApproval.incident_id == incident_id,
            IncidentApprovalSending.message_id.in_(message_ids),
        )
        .order_by(IncidentApproval.recorded_at.desc(), IncidentApproval.id.desc())
    )
    return [(message_id, approval_id) for message_id, approval_id in rows]


async def resends_of_messages(
    session: AsyncSession, message_ids: list[str]
) -> dict[tuple[str, str], str]:
    """(original message id, approval key) -> new message id, for `message_ids`."""
    return {
        (original, key): new
        for original, key, new in await session.execute(
            select(
                IncidentResend.original_message_id,
                IncidentResend.approval_key,
                IncidentResend.new_message_id,
            ).where(IncidentResend.original_message_id.in_(message_ids))
        )
    }


async def messages_being_pushed(
    session: AsyncSession, message_ids: list[str], now: datetime
) -> set[str]:
    """Those of `message_ids` whose unfinished outbox row a relay holds leased at `now`."""
    return set(
        (
            await session.execute(
                select(OutboxEntry.message_id).where(
                    OutboxEntry.message_id.in_(message_ids),
                    OutboxEntry.delivered_at.is_(None),
                    OutboxEntry.failed_at.is_(None),
                    lease_held(OutboxEntry.lease_until, now),
                )
            )
        ).scalars()
    )


async def resend_under(session: AsyncSession, message_id: str, approval_key: str) -> str | None:
    """The new message id the original was re-sent as under `approval_key`, if it was."""
    return await session.scalar(
        select(IncidentResend.new_message_id).where(
            IncidentResend.original_message_id == message_id,
            IncidentResend.approval_key == approval_key,
        )
    )


async def withdraw_delayed_message(session: AsyncSession, message_id: str, now: datetime) -> bool:
    """Take back a delayed message's unpushed queue write and suppress it (claim and lease
    cleared, fencing any worker holding it). False when a relay is pushing it right now or
    it is no longer delayed: it may go out, so it must not be re-sent."""
    await session.execute(
        update(OutboxEntry)
        .where(
            OutboxEntry.message_id == message_id,
            OutboxEntry.delivered_at.is_(None),
            OutboxEntry.failed_at.is_(None),
            lease_free(OutboxEntry.lease_until, now),
        )
        .values(failed_at=now, last_error="withdrawn: superseded by an incident resend")
        .execution_options(synchronize_session=False)
    )
    pushing = await session.execute(
        select(OutboxEntry.id).where(
            OutboxEntry.message_id == message_id,
            and_(OutboxEntry.delivered_at.is_(None), OutboxEntry.failed_at.is_(None)),
        )
    )
    if pushing.first() is not None:
        return False
    result = await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.state == "delayed")
        .values(
            state="suppressed",
            rule=WITHDRAWN_RULE,
            reason=WITHDRAWN_REASON,
            decided_at=now,
            claim_token=None,
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


RESEND_ORDER = (Key(IncidentResend.created_at), Key(IncidentResend.id))


async def resends_of_incident(session: AsyncSession, incident_id: str, page: PageRequest) -> Page:
    """A page of the incident's resends, oldest first."""
    query = select(IncidentResend).where(IncidentResend.incident_id == incident_id)
    return await page_of(session, query, RESEND_ORDER, page)
