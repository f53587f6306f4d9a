"""Impacted sendings (R-INC-4): failed and delayed messages scheduled in the incident's
time range (start → resolved, or now), grouped by account, as JSON pages or streamed CSV.

A delayed message that was re-sent is withdrawn (state `suppressed`, rule `incident`) so it
cannot go out twice; it stays on this list, with the id it was re-sent as.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from pydantic import BaseModel

from dispatch_engine.db.session import AsyncSession, async_sessionmaker
from dispatch_engine.models import Incident, Message
from dispatch_engine.schemas.cursor import decode_keys, encode_keys, parse_time
from dispatch_engine.security.spreadsheet import csv_line, csv_time
from dispatch_engine.store.accounts import account_names
from dispatch_engine.store.resends import (
    IMPACTED_STATES,
    WITHDRAWN_REASON,
    WITHDRAWN_RULE,
    impacted_messages,
    resent_as,
)
from dispatch_engine.store.resends import ImpactedQuery as ImpactedQuery

CSV_PAGE = 1000
CSV_COLUMNS = (
    "account",
    "account_name",
    "sending",
    "dispatch",
    "channel",
    "state",
    "reason",
    "scheduled_at",
    "invite",
    "resend_of",
    "resent_as",
)


class SendingOut(BaseModel):
    sending: str
    dispatch: str
    channel: str
    state: str
    reason: str | None
    scheduled_at: datetime
    invite: str
    resend_of: str | None
    resent_as: list[str]


class AccountGroup(BaseModel):
    account: str
    account_name: str | None
    sendings: list[SendingOut]


class ImpactedPage(BaseModel):
    incident: str
    range_start: datetime
    range_end: datetime
    accounts: list[AccountGroup]
    next_cursor: str | None


def time_range(incident: Incident, now: datetime) -> tuple[datetime, datetime]:
    return incident.started_at, incident.resolved_at or now


def is_impacted(message: Message) -> bool:
    return message.state in IMPACTED_STATES or (
        message.state == "suppressed"
        and message.rule == WITHDRAWN_RULE
        and message.reason == WITHDRAWN_REASON
    )


async def _extras(
    session: AsyncSession, rows: Sequence[Message]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Account names and resend ids of a page's messages (two queries)."""
    accounts = {r.account_id for r in rows}
    ids = [r.id for r in rows]
    names: dict[str, str] = {}
    resent: dict[str, list[str]] = {}
    if accounts:
        names = {a: str(n) for a, n in (await account_names(session, accounts)).items()}
        resent = await resent_as(session, ids)
    return names, resent


def _sending(row: Message, resent: dict[str, list[str]]) -> SendingOut:
    return SendingOut(
        sending=row.id,
        dispatch=row.dispatch_id,
        channel=row.channel,
        state=row.state,
        reason=row.reason,
        scheduled_at=row.due_at,
        invite=row.invite_id,
        resend_of=row.resend_of,
        resent_as=resent.get(row.id, []),
    )


def _after(cursor: str | None) -> tuple[str, datetime, str] | None:
    if not cursor:
        return None
    account, due, last = decode_keys(cursor, 3)
    return account, parse_time(due), last


async def impacted_page(
    session: AsyncSession, q: ImpactedQuery, *, limit: int, cursor: str | None
) -> ImpactedPage:
    rows = await impacted_messages(session, q, _after(cursor), limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    names, resent = await _extras(session, rows)
    groups: dict[str, AccountGroup] = {}
    for row in rows:
        group = groups.get(row.account_id)
        if group is None:
            group = groups[row.account_id] = AccountGroup(
                account=row.account_id, account_name=names.get(row.account_id), sendings=[]
            )
        group.sendings.append(_sending(row, resent))
    last = rows[-1] if rows else None
    return ImpactedPage(
        incident=q.incident_id,
        range_start=q.start,
        range_end=q.end,
        accounts=list(groups.values()),
        next_cursor=encode_keys(last.account_id, last.due_at.isoformat(), last.id)
        if more and last
        else None,
    )


async def stream_csv(
    sessions: async_sessionmaker[AsyncSession], q: ImpactedQuery
) -> AsyncIterator[str]:
    """RFC 4180 CSV (CRLF, quoted where needed), one short transaction per page."""
    yield csv_line(CSV_COLUMNS)
    after: tuple[str, datetime, str] | None = None
    while True:
        async with sessions() as session, session.begin():
            rows = await impacted_messages(session, q, after, CSV_PAGE)
            names, resent = await _extras(session, rows)
        if not rows:
            return
        chunk = [
            csv_line(
                (
                    row.account_id,
                    names.get(row.account_id, ""),
                    row.id,
                    row.dispatch_id,
                    row.channel,
                    row.state,
                    row.reason or "",
                    csv_time(row.due_at),
                    row.invite_id,
                    row.resend_of or "",
                    " ".join(resent.get(row.id, [])),
                )
            )
            for row in rows
        ]
        yield "".join(chunk)
        if len(rows) < CSV_PAGE:
            return
        last = rows[-1]
        after = (last.account_id, last.due_at, last.id)
