"""API keys: looked up by their public prefix to authenticate, listed and revoked by admins
(no commit here)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import ApiKey


async def api_key_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    """The key a bearer token names (revoked or not); the caller checks its secret."""
    return (
        await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
    ).scalar_one_or_none()


async def all_api_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    rows = await session.execute(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
    return list(rows.scalars())


async def find_api_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)
