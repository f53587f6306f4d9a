"""The HMAC ring: recompute live invites' hashes under the current key; ledger rows,
pending-token locks and unsubscribes follow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from dispatch_engine.db.session import AsyncSession, async_sessionmaker
from dispatch_engine.ingest.csv_stream import KNOWN_COLUMNS
from dispatch_engine.ingest.rows import Rejection, parse_contact
from dispatch_engine.rules.fatigue import relabelled_lock
from dispatch_engine.security.crypto import DecryptionError, FieldCipher
from dispatch_engine.security.hashing import KeyedHasher, keyed_hash
from dispatch_engine.security.sealing import open_contact
from dispatch_engine.services.key_rotation.common import (
    ColumnResult,
    in_batches,
    is_current,
    matches,
)
from dispatch_engine.store import key_rotation as store
from dispatch_engine.store.fatigue_locks import InviteRehash, release_conflicting_locks
from dispatch_engine.store.unsubscribes import copy_unsubscribes

log = structlog.get_logger(__name__)

# --- HMAC ring ----------------------------------------------------------------------------


def _uuid_value(
    hasher: KeyedHasher,
    stored_hash: str,
    contact: Mapping[str, Any],
    *,
    external_id: str | None,
    time_zone: str | None,
    uuid_field: str | None,
) -> str | None:
    """The normalised fatigue UUID whose hash is ``stored_hash``, found the way ingest found
    it (``parse_contact``) from the invite's stored fields: first with its policy's
    ``uuid_field``, then (that field may have changed since) with every other field. Only a
    value that reproduces the stored hash under its own key is returned."""
    email = contact.get("email") or None
    mobile = contact.get("mobile") or None
    attributes = dict(contact.get("attributes") or {})
    row: dict[str, Any] = {
        "email": email,
        "mobile": mobile,
        "external_id": external_id,
        "time_zone": time_zone,
        "attributes": attributes,
    }
    channels = frozenset(
        channel for channel, address in (("email", email), ("sms", mobile)) if address
    )
    fields = dict.fromkeys(
        [*([uuid_field] if uuid_field else []), *sorted(KNOWN_COLUMNS), *attributes]
    )
    if channels:
        for candidate in fields:
            parsed = parse_contact(0, row, channels=channels, uuid_field=candidate)
            if isinstance(parsed, Rejection):
                continue
            if matches(hasher, stored_hash, parsed.uuid_value):
                return parsed.uuid_value
    for raw in (email, mobile):
        if raw and matches(hasher, stored_hash, raw):
            return str(raw)
    return None


_HASH_COLUMNS = ("uuid_hash", "email_hash", "mobile_hash")
_INVITE_COLUMNS = (*_HASH_COLUMNS, "fatigue_lock")


def _rehash_invite(
    cipher: FieldCipher, hasher: KeyedHasher, row: Any, skipped: dict[str, int]
) -> InviteRehash | None:
    """New hashes for one invite row (only stale, verified columns change)."""
    current = hasher.current_key_id
    try:
        contact = open_contact(cipher, row.id, row.contact)
    except DecryptionError:
        log.warning("key_rotation_undecryptable", column="invites.contact", row=row.id)
        for name in _HASH_COLUMNS:
            if not is_current(getattr(row, name), current):
                skipped[name] += 1
        return None
    old: dict[str, str | None] = {name: getattr(row, name) for name in _INVITE_COLUMNS}
    new = dict(old)
    values: dict[str, str | None] = {
        "email_hash": contact.get("email") or None,
        "mobile_hash": contact.get("mobile") or None,
    }
    if not is_current(row.uuid_hash, current):
        values["uuid_hash"] = _uuid_value(
            hasher,
            row.uuid_hash,
            contact,
            external_id=row.external_id,
            # Only a zone the contact file gave was a column ingest could hash.
            time_zone=row.time_zone if row.time_zone_source == "contact" else None,
            uuid_field=row.uuid_field,
        )
    for name in _HASH_COLUMNS:
        stored = old[name]
        if is_current(stored, current):
            continue
        assert stored is not None
        value = values.get(name)
        if value is None or not matches(hasher, stored, value):
            skipped[name] += 1
            log.warning("key_rotation_unverifiable_hash", column=f"invites.{name}", row=row.id)
            continue
        new[name] = keyed_hash(hasher, value)
    if new["uuid_hash"] != old["uuid_hash"]:
        assert old["uuid_hash"] is not None and new["uuid_hash"] is not None
        new["fatigue_lock"] = (
            relabelled_lock(old["fatigue_lock"], old["uuid_hash"], new["uuid_hash"])
            or old["fatigue_lock"]
        )
    if new == old:
        return None
    return InviteRehash(row.id, old, new)


async def rehash_invites(
    sessions: async_sessionmaker[AsyncSession],
    cipher: FieldCipher,
    hasher: KeyedHasher,
    batch_size: int,
    dry_run: bool,
    results: Mapping[str, ColumnResult],
) -> None:
    current = hasher.current_key_id

    async def step(session: AsyncSession, after: Any) -> Any:
        rows = await store.invites_to_rehash(session, current, after=after, limit=batch_size)
        if not rows:
            return None
        skipped = dict.fromkeys(_HASH_COLUMNS, 0)
        plans = [p for row in rows if (p := _rehash_invite(cipher, hasher, row, skipped))]
        await release_conflicting_locks(session, plans)
        uuid_pairs: dict[str, str] = {}
        address_pairs: dict[str, str] = {}
        for plan in plans:
            for name, pairs in (
                ("uuid_hash", uuid_pairs),
                ("email_hash", address_pairs),
                ("mobile_hash", address_pairs),
            ):
                old_hash, new_hash = plan.old[name], plan.new[name]
                if old_hash is not None and new_hash is not None and old_hash != new_hash:
                    pairs[old_hash] = new_hash
        if dry_run:
            done = {plan.invite_id for plan in plans}
            ledger = await store.count_ledger_rows_of(session, list(uuid_pairs))
            copied = await copy_unsubscribes(session, address_pairs, dry_run=True)
        else:
            updates = [
                {
                    "k": plan.invite_id,
                    **{f"new_{c}": plan.new[c] for c in _INVITE_COLUMNS},
                    **{f"old_{c}": plan.old[c] for c in _INVITE_COLUMNS},
                }
                for plan in plans
            ]
            done = await store.rewrite_invites(session, updates, _INVITE_COLUMNS)
            # The pairs hold whoever wrote the invite meanwhile: HMAC(value) is HMAC(value).
            ledger = await store.relabel_ledger(session, uuid_pairs)
            copied = await copy_unsubscribes(session, address_pairs)
        for plan in plans:
            if plan.invite_id in done:
                for name in _INVITE_COLUMNS:
                    if plan.new[name] != plan.old[name]:
                        results[f"invites.{name}"].changed += 1
        for name, count in skipped.items():
            results[f"invites.{name}"].skipped += count
        results["fatigue_ledger.uuid_hash"].changed += ledger
        results["unsubscribes.address_hash"].changed += copied
        return rows[-1][0]

    await in_batches(sessions, step)


async def repair_locks(
    sessions: async_sessionmaker[AsyncSession],
    hasher: KeyedHasher,
    batch_size: int,
    dry_run: bool,
    result: ColumnResult,
) -> None:
    """Locks a worker took from an invite's old hash while it was being rehashed: the
    invite's hash is current, its lock still names the old one."""
    current = hasher.current_key_id

    async def step(session: AsyncSession, after: Any) -> Any:
        rows = await store.invites_with_stale_locks(session, current, after=after, limit=batch_size)
        if not rows:
            return None
        plans = []
        for invite_id, lock, uuid_hash in rows:
            parts = str(lock).rsplit(":", 2)  # policy:epoch:sandbox : key id : hex
            if len(parts) != 3 or parts[1] == current:
                continue
            old = {"uuid_hash": uuid_hash, "fatigue_lock": lock}
            plans.append(
                InviteRehash(invite_id, old, {**old, "fatigue_lock": f"{parts[0]}:{uuid_hash}"})
            )
        await release_conflicting_locks(session, plans)
        updates = [
            {
                "k": p.invite_id,
                "new_fatigue_lock": p.new["fatigue_lock"],
                "old_fatigue_lock": p.old["fatigue_lock"],
            }
            for p in plans
        ]
        result.changed += await store.rewrite_invite_locks(session, updates, dry_run=dry_run)
        return rows[-1][0]

    await in_batches(sessions, step)


async def repair_ledger(
    sessions: async_sessionmaker[AsyncSession],
    hasher: KeyedHasher,
    batch_size: int,
    dry_run: bool,
    result: ColumnResult,
) -> None:
    """Ledger rows still under an old key whose invite's hash is current: a send recorded
    from the invite's old hash (a worker racing the rehash). Ledger rows are only ever
    written from their invite's ``uuid_hash``, so the invite's current hash is theirs."""
    current = hasher.current_key_id

    async def step(session: AsyncSession, after: Any) -> Any:
        rows = await store.ledger_rows_behind_invites(
            session, current, after=after, limit=batch_size
        )
        if not rows:
            return None
        updates = [
            {"k": row_id, "new_uuid_hash": new, "old_uuid_hash": old} for row_id, old, new in rows
        ]
        result.changed += await store.rewrite_ledger_hashes(session, updates, dry_run=dry_run)
        return rows[-1][0]

    await in_batches(sessions, step)


async def hmac_remaining(
    sessions: async_sessionmaker[AsyncSession],
    hasher: KeyedHasher,
    results: Mapping[str, ColumnResult],
) -> None:
    async with sessions() as session:
        remaining = await store.count_stale_hashes(session, hasher.current_key_id)
    for name, count in remaining.items():
        results[name].remaining = count
