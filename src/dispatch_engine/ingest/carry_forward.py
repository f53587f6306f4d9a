"""Carry-forward at ingest: a returning person's unsubscribes and fatigue history move
from old HMAC keys to the current one, in the ingest chunk's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dispatch_engine.db.session import AsyncSession
from dispatch_engine.rules.fatigue import fatigue_lock_key
from dispatch_engine.security.hashing import KeyedHasher, keyed_hash, old_key_ids
from dispatch_engine.store import ingest as store
from dispatch_engine.store.fatigue_locks import InviteRehash, release_conflicting_locks
from dispatch_engine.store.unsubscribes import copy_unsubscribes


def _carry_pairs(hasher: KeyedHasher, values: Iterable[str | None]) -> dict[str, str]:
    """old-key hash -> current-key hash of each value, for every non-current ring key."""
    old_ids = old_key_ids(hasher)
    pairs: dict[str, str] = {}
    if not old_ids:
        return pairs
    for value in {v for v in values if v}:
        new_hash = keyed_hash(hasher, value)
        for key_id in old_ids:
            pairs[f"{key_id}:{hasher.digest(value, key_id)}"] = new_hash
    return pairs


async def carry_forward_unsubscribes(
    session: AsyncSession, hasher: KeyedHasher, normalised_addresses: Iterable[str | None]
) -> int:
    """Copy unsubscribes recorded under an old HMAC key to the current key, for the given
    addresses; returns the rows added. Does nothing (and no query) with a one-key ring.

    An unsubscribe is stored under every key of the ring *at the time it is recorded*, and
    the worker matches an invite's single current-key hash, so a person who unsubscribed
    before the current key joined the ring, and has no live invite that
    ``dispatch-engine keys reencrypt`` could rehash, would not be blocked. Call this from
    ingest, in the chunk's own transaction (before it commits; the worker only looks at
    send time), with:

    * ``normalised_addresses``: the ``email`` and the ``mobile`` of every accepted contact
      of the chunk, exactly as ``ContactIn`` holds them after ``parse_contact`` (normalised
      email, E.164 mobile: the strings ingest passes to ``keyed_hash`` for ``email_hash`` /
      ``mobile_hash``). ``None`` entries are ignored; both channels may be mixed.

    Unsubscribes of every account are carried (an address hash is the same person in all
    of them), keeping their ``created_at`` and ``source``; the old rows stay. One lookup
    and at most one INSERT … ON CONFLICT DO NOTHING per 1,000 hashes. Idempotent.
    """
    pairs = _carry_pairs(hasher, normalised_addresses)
    return await copy_unsubscribes(session, pairs)


@dataclass(frozen=True)
class LockScope:
    """The pending-token locks (fatigue rule 1) one ingest chunk competes for."""

    policy_id: str
    fatigue_epoch: int
    sandbox: bool


@dataclass(frozen=True)
class CarriedFatigue:
    ledger_rows: int = 0
    locks: int = 0


async def carry_forward_fatigue(
    session: AsyncSession,
    hasher: KeyedHasher,
    normalised_uuid_values: Iterable[str | None],
    *,
    lock_scope: LockScope | None = None,
) -> CarriedFatigue:
    """Relabel a person's fatigue history from old-HMAC-key hashes to the current-key hash.

    Invites hash their fatigue UUID with the key current at ingest, and fatigue rule 2
    counts ledger rows by that hash, so sends recorded under an old key (e.g. for invites
    whose contact data was erased, which ``keys reencrypt`` cannot rehash) would not count
    for invites ingested under the new key. Call this from ingest in the chunk's own
    transaction, **before** the chunk's pending-token locks are assigned
    (``_assign_locks``), with:

    * ``normalised_uuid_values``: ``ContactIn.uuid_value`` of every accepted contact of the
      chunk (the normalised fatigue UUID that ingest passes to ``keyed_hash`` for
      ``uuid_hash``). ``None`` entries are ignored.
    * ``lock_scope``: when the policy's rule 1 (pending token) is enabled,
      ``LockScope(policy.id, policy.fatigue_epoch, bool(policy.is_sandbox))`` — the same
      values ingest passes to ``fatigue_lock_key``. An invite holding that lock under an
      old-key hash then holds it under the current-key hash (its ``uuid_hash`` moves with
      it), so ingest and the worker see it. If the current-key lock is already held by
      another invite, the old one is released instead (one holder per person).

    Ledger rows: one UPDATE per call (an index probe per hash). Locks: one lookup by the
    unique lock index and at most one UPDATE. A concurrent writer racing for the same
    lock surfaces as IntegrityError, which ingest's chunk retry already handles. Does
    nothing (and no query) with a one-key ring. Idempotent.
    """
    pairs = _carry_pairs(hasher, normalised_uuid_values)
    if not pairs:
        return CarriedFatigue()
    ledger = await store.relabel_ledger(session, pairs)
    locks = 0
    if lock_scope is not None:
        locks = await _carry_locks(session, pairs, lock_scope)
    return CarriedFatigue(ledger_rows=ledger, locks=locks)


async def _carry_locks(session: AsyncSession, pairs: Mapping[str, str], scope: LockScope) -> int:
    def lock(uuid_hash: str) -> str:
        return fatigue_lock_key(scope.policy_id, scope.fatigue_epoch, scope.sandbox, uuid_hash)

    targets = {lock(old): (old, new) for old, new in pairs.items()}
    holders = await store.invites_holding(session, list(targets))
    plans = [
        InviteRehash(
            invite_id,
            {"fatigue_lock": old_lock, "uuid_hash": uuid_hash},
            {"fatigue_lock": lock(targets[old_lock][1]), "uuid_hash": targets[old_lock][1]},
        )
        for invite_id, old_lock, uuid_hash in holders
    ]
    await release_conflicting_locks(session, plans)
    updates = [
        {
            "k": p.invite_id,
            "new_fatigue_lock": p.new["fatigue_lock"],
            "new_uuid_hash": p.new["uuid_hash"],
            "old_fatigue_lock": p.old["fatigue_lock"],
        }
        for p in plans
    ]
    return await store.move_locks(session, updates)
