"""API keys: looked up by their public prefix to authenticate, listed and revoked by admins
(no commit here)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import ApiKey
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of


async def api_key_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    """The key a bearer token names (revoked or not); the caller checks its secret."""
    return (
        await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
    ).scalar_one_or_none()


async def all_api_keys(session: AsyncSession, page: PageRequest) -> Page:
    """A page of the keys, revoked ones too, oldest first."""
    return await page_of(session, select(ApiKey), (Key(ApiKey.created_at), Key(ApiKey.id)), page)


async def find_api_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)
