"""Incident notification webhooks, as the admin routes change them (no commit here)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import IncidentNotification


async def drop_notifications_of_webhook(session: AsyncSession, webhook_id: str) -> None:
    """A webhook is removed: its undelivered notifications go with it."""
    await session.execute(
        delete(IncidentNotification).where(IncidentNotification.webhook_id == webhook_id)
    )
