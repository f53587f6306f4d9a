"""An account's queue integration (one row per account; no commit here)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import QueueIntegration


async def find_integration(session: AsyncSession, account_id: str) -> QueueIntegration | None:
    return await session.get(QueueIntegration, account_id)
