"""Maintenance jobs: token expiry and erasure of contact data (R-INV-3, R-INV-5).

Both are idempotent and set-based, so several workers may run them at once. Their
statements are in `store/retention.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.store import decisions, retention

ERASE_BATCH = 5_000
PRUNE_BATCH = 10_000


async def expire_tokens(session: AsyncSession, now: datetime, worker: str | None = None) -> int:
    """Invites whose token expired: waiting messages end `token_expired` (traced as by
    `worker`), rule 1 lets go."""
    await retention.suppress_waiting_of_expired_invites(session, now, worker)
    return await retention.expire_invites(session, now)


async def mark_delayed(session: AsyncSession, now: datetime, after: timedelta) -> int:
    """R-Q-2: a message stuck past its due time — not by a rule or a pause — is `delayed`.

    Two ways to be stuck: never claimed (no worker, a backlog) — whether it was pending or
    deferred to a window or a DND retry that has come — or passed by the rules but its queue
    push not yet acknowledged. The claim loop and the relay turn a delayed message back into
    `sent` (or `failed`, or deferred again) when they get to it.
    """
    cutoff = now - after
    unclaimed = await retention.mark_unclaimed_delayed(session, cutoff)
    unpushed = await retention.mark_unpushed_delayed(session, cutoff)
    return unclaimed + unpushed


async def erase_finished_contacts(session: AsyncSession, now: datetime) -> int:
    """Erase addresses and attributes of invites that can send nothing more.

    What stays: hashes, times, states and reasons — what counts and fatigue need. The
    delivered outbox rows of those invites (they carry the address) go too.
    """
    candidates = await retention.finished_invites_with_contact(session, ERASE_BATCH)
    if not candidates:
        return 0
    await retention.erase_invite_contacts(session, candidates, now)
    await retention.delete_delivered_outbox_of(session, candidates)
    return len(candidates)


async def prune_decisions(session: AsyncSession, now: datetime, retention_days: int) -> int:
    """One batch of the decision trace older than `retention_days` goes (0: kept forever).
    The trace holds no personal data, so erasure leaves it; this bounds its size."""
    if retention_days <= 0:
        return 0
    return await decisions.prune_decisions(
        session, now - timedelta(days=retention_days), PRUNE_BATCH
    )
