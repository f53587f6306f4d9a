"""Incident notification webhooks and their outbox: the configured webhooks, and the
deliveries the incident clock job claims (over `db/leases`), sends and writes back."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db import leases
from dispatch_engine.models import IncidentNotification, NotificationWebhook
from dispatch_engine.models.base import table_of
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

# A claimed notification's columns (id, webhook_id, event, payload, attempts, …).
ClaimedNotification = Row[Any]

# Due: neither delivered nor given up, its next attempt reached.
NOTIFICATIONS = leases.LeasedTable.of(
    table_of(IncidentNotification),
    due=lambda now: (
        IncidentNotification.delivered_at.is_(None),
        IncidentNotification.failed_at.is_(None),
        IncidentNotification.next_attempt_at <= now,
    ),
    order=(IncidentNotification.next_attempt_at, IncidentNotification.id),
)


WEBHOOK_ORDER = (Key(NotificationWebhook.created_at), Key(NotificationWebhook.id))


async def all_webhooks(session: AsyncSession) -> list[NotificationWebhook]:
    """Every notification webhook, oldest first (an incident event goes to each)."""
    query = select(NotificationWebhook).order_by(*(k.column for k in WEBHOOK_ORDER))
    return list((await session.execute(query)).scalars())


async def webhooks_page(session: AsyncSession, page: PageRequest) -> Page:
    """A page of the notification webhooks, oldest first."""
    return await page_of(session, select(NotificationWebhook), WEBHOOK_ORDER, page)


async def find_webhook(session: AsyncSession, webhook_id: str) -> NotificationWebhook | None:
    return await session.get(NotificationWebhook, webhook_id)


async def webhooks_by_id(
    session: AsyncSession, webhook_ids: Collection[str]
) -> dict[str, NotificationWebhook]:
    return {
        w.id: w
        for w in (
            await session.execute(
                select(NotificationWebhook).where(NotificationWebhook.id.in_(webhook_ids))
            )
        ).scalars()
    }


async def claim_due_notifications(
    session: AsyncSession, now: datetime, *, limit: int, lease: timedelta
) -> tuple[str, list[ClaimedNotification]]:
    """Up to `limit` due notifications leased under one new token (in the caller's
    transaction), oldest next attempt first."""
    return await leases.claim(session, NOTIFICATIONS, now=now, limit=limit, lease=lease)


async def write_back_notifications(
    session: AsyncSession, token: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """End the claim of each row (`b_id` and the columns to set), fenced by `token`."""
    await leases.write_back(session, NOTIFICATIONS, token, rows)
