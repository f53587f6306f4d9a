"""Account lookups shared by routes and services (no commit here)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.errors import NotFound
from dispatch_engine.models import Account


async def get_account(session: AsyncSession, account_id: str, *, lock: bool = False) -> Account:
    """The account; `lock` takes its row lock (PostgreSQL) so concurrent edits serialise."""
    account = await session.get(Account, account_id, with_for_update=lock or None)
    if account is None:
        raise NotFound(f"account '{account_id}'")
    return account
