"""The "who was not sent and why" report: a dispatch's invites as CSV, one line per message
(an invite with no message yet has one line of its own), streamed a page at a time.

No address is in it (they are encrypted at rest and not needed to act on the report) and
no token (a token opens the survey); `external_id`, the batch and the file row say who.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

from dispatch_engine.db.session import AsyncSession, async_sessionmaker
from dispatch_engine.models import Invite, Message
from dispatch_engine.security.spreadsheet import csv_line, csv_time
from dispatch_engine.store.invites import InviteFilter, invites_page, messages_of_invites
from dispatch_engine.store.paging import PageRequest

CSV_PAGE = 1000
CSV_COLUMNS = (
    "invite",
    "external_id",
    "dispatch",
    "batch",
    "row",
    "invite_state",
    "end_reason",
    "received_at",
    "first_sent_at",
    "responded_at",
    "message",
    "position",
    "channel",
    "message_state",
    "rule",
    "reason",
    "scheduled_for",
    "sent_at",
    "decided_at",
)


def _invite_cells(invite: Invite) -> tuple[object, ...]:
    return (
        invite.id,
        invite.external_id,
        invite.dispatch_id,
        invite.batch_id,
        invite.row_number,
        invite.state,
        invite.end_reason,
        csv_time(invite.received_at),
        csv_time(invite.first_sent_at),
        csv_time(invite.responded_at),
    )


def _message_cells(message: Message | None) -> tuple[object, ...]:
    if message is None:
        return ("",) * 9
    return (
        message.id,
        message.position,
        message.channel,
        message.state,
        message.rule,
        message.reason,
        csv_time(message.not_before),
        csv_time(message.sent_at),
        csv_time(message.decided_at),
    )


async def stream_invites_csv(
    sessions: async_sessionmaker[AsyncSession], where: InviteFilter
) -> AsyncIterator[str]:
    """RFC 4180 CSV, one short transaction per page of invites."""
    yield csv_line(CSV_COLUMNS)
    page = PageRequest(CSV_PAGE, None)
    while True:
        async with sessions() as session, session.begin():
            invites, next_cursor = await invites_page(session, where, page)
            messages = await messages_of_invites(session, [i.id for i in invites])
        by_invite: dict[str, list[Message | None]] = defaultdict(list)
        for message in messages:
            by_invite[message.invite_id].append(message)
        yield "".join(
            csv_line(_invite_cells(invite) + _message_cells(message))
            for invite in invites
            for message in by_invite.get(invite.id) or [None]
        )
        if next_cursor is None:
            return
        page = PageRequest(CSV_PAGE, next_cursor)
