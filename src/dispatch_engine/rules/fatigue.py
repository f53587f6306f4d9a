"""The pending-token lock key of fatigue rule 1, the one place that knows its format.

Ingest assigns it, the worker and key rotation relabel it; a unique index on
``invites.fatigue_lock`` lets one invite per key hold it (``rules/pipeline.py`` decides
what holding it means).
"""

from __future__ import annotations

__all__ = ["fatigue_lock_key", "relabelled_lock"]


def fatigue_lock_key(policy_id: str, epoch: int, sandbox: bool, uuid_hash: str) -> str:
    """One pending-token lock per person, policy, fatigue epoch and sandbox flag."""
    return f"{policy_id}:{epoch}:{int(sandbox)}:{uuid_hash}"


def relabelled_lock(lock: str | None, old_hash: str, new_hash: str) -> str | None:
    """The pending-token lock (``fatigue_lock_key(…, uuid_hash)``) for the new hash."""
    if lock is None or not lock.endswith(f":{old_hash}"):
        return None
    return lock[: -len(old_hash)] + new_hash
