"""Moving pending-token locks (fatigue rule 1) to a new hash without two holders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import existing_values
from dispatch_engine.models import Invite


@dataclass
class InviteRehash:
    """An invite's hash and lock columns before and after a move to the current key."""

    invite_id: str
    old: dict[str, str | None]
    new: dict[str, str | None]


async def release_conflicting_locks(session: AsyncSession, plans: Sequence[InviteRehash]) -> None:
    """A relabelled lock another invite already holds (ingested under the new key while this
    one's lock was invisible to it) is released instead: one holder per person again."""
    moving = [p for p in plans if p.new["fatigue_lock"] not in (None, p.old["fatigue_lock"])]
    held = await existing_values(
        session, Invite.fatigue_lock, {str(p.new["fatigue_lock"]) for p in moving}
    )
    for plan in moving:
        if plan.new["fatigue_lock"] in held:
            plan.new["fatigue_lock"] = None
