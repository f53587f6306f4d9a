"""Set-based pausing of dispatches when their policy changes under them (R-POL-7, R-POL-8)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.models import Dispatch

# Why the engine itself paused a dispatch (an operator's pause is "manual" or their reason).
POLICY_DELETED = "policy_deleted"
LINEUP_CHANGED = "lineup_changed"
VALIDITY_TOO_SHORT = "validity_too_short"  # lifted by PATCHing a long enough validity


async def pause_active_dispatches(
    session: AsyncSession,
    policy_id: str,
    reason: str,
    now: datetime,
    *,
    only_ids: list[str] | None = None,
) -> list[str]:
    """Pause every active dispatch of the policy (or the listed ones) and return their ids."""
    query = select(Dispatch.id).where(Dispatch.policy_id == policy_id, Dispatch.status == "active")
    if only_ids is not None:
        query = query.where(Dispatch.id.in_(only_ids))
    ids = list((await session.execute(query.order_by(Dispatch.id))).scalars())
    if ids:
        await session.execute(
            update(Dispatch)
            .where(Dispatch.id.in_(ids))
            .values(
                status="paused",
                pause_reason=reason,
                paused_at=now,
                updated_at=now,
                version=Dispatch.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
    return ids


async def dispatches_of_policy(session: AsyncSession, policy_id: str) -> list[Dispatch]:
    rows = await session.execute(select(Dispatch).where(Dispatch.policy_id == policy_id))
    return list(rows.scalars())
