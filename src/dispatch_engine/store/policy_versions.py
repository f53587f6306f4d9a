"""Policy versions: one immutable row per change of a policy, written in the change's
transaction (no commit here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import PolicyVersion
from dispatch_engine.store.paging import Key, Page, PageRequest, page_of

#: Newest first.
VERSION_ORDER = (Key(PolicyVersion.number, descending=True),)


def add_policy_version(
    session: AsyncSession,
    *,
    policy_id: str,
    number: int,
    created_at: datetime,
    key_id: str | None,
    change: str,
    snapshot: dict[str, Any],
) -> PolicyVersion:
    """Record version `number` of the policy (flushed with the change it records)."""
    version = PolicyVersion(
        policy_id=policy_id,
        number=number,
        created_at=created_at,
        key_id=key_id,
        change=change,
        snapshot=snapshot,
    )
    session.add(version)
    return version


async def versions_of_policy(session: AsyncSession, policy_id: str, page: PageRequest) -> Page:
    """A page of the policy's versions, newest first."""
    query = select(PolicyVersion).where(PolicyVersion.policy_id == policy_id)
    return await page_of(session, query, VERSION_ORDER, page)


async def find_policy_version(
    session: AsyncSession, policy_id: str, number: int
) -> PolicyVersion | None:
    """Version `number` of the policy, if it was recorded."""
    return await session.get(PolicyVersion, (policy_id, number))
