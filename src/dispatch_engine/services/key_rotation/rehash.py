"""The HMAC ring: recompute live invites' hashes under the current key; ledger rows,
pending-token locks and unsubscribes follow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch_engine.db.conditional import relabel, update_unchanged
from dispatch_engine.ingest.csv_stream import KNOWN_COLUMNS
from dispatch_engine.ingest.rows import Rejection, parse_contact
from dispatch_engine.models import (
    FatigueLedger,
    Invite,
    Policy,
    Unsubscribe,
)
from dispatch_engine.models.base import table_of
from dispatch_engine.rules.fatigue import relabelled_lock
from dispatch_engine.security.crypto import DecryptionError, FieldCipher
from dispatch_engine.security.hashing import KeyedHasher, keyed_hash
from dispatch_engine.security.sealing import open_contact
from dispatch_engine.services.key_rotation.common import (
    ColumnResult,
    count_matching,
    in_batches,
    is_current,
    matches,
    under_old_key,
    write_unchanged,
)
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
            time_zone=row.time_zone,
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
    invites = table_of(Invite)

    async def step(session: AsyncSession, after: Any) -> Any:
        query = (
            select(
                Invite.id,
                Invite.external_id,
                Invite.time_zone,
                Invite.uuid_hash,
                Invite.email_hash,
                Invite.mobile_hash,
                Invite.fatigue_lock,
                Invite.contact,
                Policy.uuid_field,
            )
            .outerjoin(Policy, Policy.id == Invite.policy_id)
            .where(
                Invite.contact.is_not(None),
                or_(
                    under_old_key(Invite.uuid_hash, current),
                    and_(Invite.email_hash.is_not(None), under_old_key(Invite.email_hash, current)),
                    and_(
                        Invite.mobile_hash.is_not(None), under_old_key(Invite.mobile_hash, current)
                    ),
                ),
            )
        )
        if after is not None:
            query = query.where(Invite.id > after)
        rows = (await session.execute(query.order_by(Invite.id).limit(batch_size))).all()
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
            ledger = await count_matching(session, FatigueLedger.uuid_hash, list(uuid_pairs))
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
            done = await update_unchanged(
                session, invites, "id", updates, new=_INVITE_COLUMNS, old=_INVITE_COLUMNS
            )
            # The pairs hold whoever wrote the invite meanwhile: HMAC(value) is HMAC(value).
            ledger = await relabel(session, table_of(FatigueLedger), "uuid_hash", uuid_pairs)
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


def _lock_suffix_differs() -> ColumnElement[bool]:
    """The lock does not end with the invite's own uuid hash."""
    start = func.length(Invite.fatigue_lock) - func.length(Invite.uuid_hash) + 1
    return func.substr(Invite.fatigue_lock, start) != Invite.uuid_hash


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
        query = select(Invite.id, Invite.fatigue_lock, Invite.uuid_hash).where(
            Invite.fatigue_lock.is_not(None),
            ~under_old_key(Invite.uuid_hash, current),
            _lock_suffix_differs(),
        )
        if after is not None:
            query = query.where(Invite.id > after)
        rows = (await session.execute(query.order_by(Invite.id).limit(batch_size))).all()
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
        result.changed += await write_unchanged(
            session,
            table_of(Invite),
            "id",
            updates,
            new=["fatigue_lock"],
            old=["fatigue_lock"],
            dry_run=dry_run,
        )
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
        query = (
            select(FatigueLedger.id, FatigueLedger.uuid_hash, Invite.uuid_hash)
            .join(Invite, Invite.id == FatigueLedger.invite_id)
            .where(
                under_old_key(FatigueLedger.uuid_hash, current),
                ~under_old_key(Invite.uuid_hash, current),
            )
        )
        if after is not None:
            query = query.where(FatigueLedger.id > after)
        rows = (await session.execute(query.order_by(FatigueLedger.id).limit(batch_size))).all()
        if not rows:
            return None
        updates = [
            {"k": row_id, "new_uuid_hash": new, "old_uuid_hash": old} for row_id, old, new in rows
        ]
        result.changed += await write_unchanged(
            session,
            table_of(FatigueLedger),
            "id",
            updates,
            new=["uuid_hash"],
            old=["uuid_hash"],
            dry_run=dry_run,
        )
        return rows[-1][0]

    await in_batches(sessions, step)


async def hmac_remaining(
    sessions: async_sessionmaker[AsyncSession],
    hasher: KeyedHasher,
    results: Mapping[str, ColumnResult],
) -> None:
    current = hasher.current_key_id

    def stale(column: Any) -> ColumnElement[bool]:
        return and_(column.is_not(None), under_old_key(column, current))

    live = Invite.contact.is_not(None)
    erased = Invite.contact.is_(None)
    counts: dict[str, ColumnElement[bool]] = {
        "invites.uuid_hash": and_(live, stale(Invite.uuid_hash)),
        "invites.email_hash": and_(live, stale(Invite.email_hash)),
        "invites.mobile_hash": and_(live, stale(Invite.mobile_hash)),
        "invites.fatigue_lock": and_(
            Invite.fatigue_lock.is_not(None),
            or_(under_old_key(Invite.uuid_hash, current), _lock_suffix_differs()),
        ),
        "invites (erased)": and_(
            erased,
            or_(stale(Invite.uuid_hash), stale(Invite.email_hash), stale(Invite.mobile_hash)),
        ),
    }
    async with sessions() as session:
        for name, condition in counts.items():
            query = select(func.count()).select_from(Invite).where(condition)
            results[name].remaining = int((await session.execute(query)).scalar_one())
        for name, column in (
            ("fatigue_ledger.uuid_hash", FatigueLedger.uuid_hash),
            ("unsubscribes.address_hash", Unsubscribe.address_hash),
        ):
            query = select(func.count()).where(stale(column))
            results[name].remaining = int((await session.execute(query)).scalar_one())
