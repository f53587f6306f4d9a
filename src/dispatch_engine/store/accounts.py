"""Account lookups shared by routes and services (no commit here)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.errors import NotFound
from dispatch_engine.models import Account
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of


async def get_account(session: AsyncSession, account_id: str, *, lock: bool = False) -> Account:
    """The account; `lock` takes its row lock (PostgreSQL) so concurrent edits serialise."""
    account = await session.get(Account, account_id, with_for_update=lock or None)
    if account is None:
        raise NotFound(f"account '{account_id}'")
    return account


async def find_account(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def accounts_by_id(session: AsyncSession, page: PageRequest, only: str | None = None) -> Page:
    """A page of the accounts (or only the one `only` names), by id."""
    query = select(Account)
    if only is not None:
        query = query.where(Account.id == only)
    return await page_of(session, query, (Key(Account.id),), page)


async def known_account_ids(session: AsyncSession, account_ids: Collection[str]) -> set[str]:
    """Those of `account_ids` that name an account."""
    return set(
        (await session.execute(select(Account.id).where(Account.id.in_(account_ids)))).scalars()
    )


async def account_names(session: AsyncSession, account_ids: Collection[str]) -> dict[str, Any]:
    """Account id -> name, for those of `account_ids` that exist."""
    return dict(
        (
            await session.execute(
                select(Account.id, Account.name).where(Account.id.in_(account_ids))
            )
        ).all()
    )
