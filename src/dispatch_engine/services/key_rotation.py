"""Key rotation: move stored values to the current key of each ring.

Two rings rotate (see ``docs/operations.md``, "Key rotation"):

* the **encryption** ring (``DISPATCH_ENCRYPTION_KEYS``): every column in
  :data:`ENCRYPTED_COLUMNS` whose token (``"<key id>:<b64>"``) was sealed by another key is
  decrypted and sealed again under the current key, with the same associated data its writer
  used;
* the **HMAC** ring (``DISPATCH_HMAC_KEYS``): invites that still hold their contact data get
  ``uuid_hash``, ``email_hash`` and ``mobile_hash`` recomputed under the current key from the
  decrypted values (the ingest's own parsing and :func:`keyed_hash`; every recomputed value
  is first checked against the stored hash under its old key). Each ``old hash -> new hash``
  pair learned that way also relabels the person's fatigue ledger rows, the invite's
  pending-token lock, and copies the unsubscribes recorded under the old hash (the old rows
  stay).

:func:`rotate_keys` does both, in batches of its own short transactions: rows are selected by
key id (keyset pagination on the primary key) and written with one conditional statement per
batch (``WHERE value = old value``), so a writer that changes a row meanwhile wins and the
row is simply picked up by the next run. Running it again changes nothing.

What cannot be recomputed (hashes of invites whose contact data was erased, unsubscribes of
people with no live invite) is carried forward at ingest time by
:func:`carry_forward_unsubscribes` and :func:`carry_forward_fatigue`, when that person comes
back.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Table, and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dispatch_engine.db.bulk import _pg_array_type, dialect_of, existing_values, member_of
from dispatch_engine.db.engine import session_factory
from dispatch_engine.delivery.contacts import _aad as invite_contact_aad
from dispatch_engine.delivery.contacts import open_contact
from dispatch_engine.delivery.facts import fatigue_lock_key
from dispatch_engine.ingest.csv_stream import KNOWN_COLUMNS
from dispatch_engine.ingest.rows import Rejection, parse_contact
from dispatch_engine.ingest.service import keyed_hash
from dispatch_engine.models import (
    FatigueLedger,
    Invite,
    NotificationWebhook,
    Policy,
    QueueIntegration,
    Unsubscribe,
)
from dispatch_engine.models.base import Base, table_of
from dispatch_engine.security.crypto import DecryptionError, FieldCipher
from dispatch_engine.security.hashing import KeyedHasher
from dispatch_engine.services.integrations import _aad as integration_secret_aad

__all__ = [
    "ENCRYPTED_COLUMNS",
    "CarriedFatigue",
    "ColumnResult",
    "EncryptedColumn",
    "LockScope",
    "RotationReport",
    "carry_forward_fatigue",
    "carry_forward_unsubscribes",
    "rotate_keys",
]

log = structlog.get_logger(__name__)

BATCH_RETRIES = 3
# Values per `IN (…)` list or multi-row INSERT (SQLite allows 32,766 parameters).
_CHUNK = 1_000


def webhook_url_aad(webhook_id: str) -> bytes:
    """As `incidents.notifications.create_webhook` seals (and `_post` opens) the URL."""
    return webhook_id.encode()


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of FieldCipher tokens, its table's primary key, and the associated data the
    writer bound each token to (computed from the primary key)."""

    model: type[Base]
    key: str
    column: str
    aad: Callable[[str], bytes]

    @property
    def table(self) -> Table:
        return table_of(self.model)

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"


#: Every encrypted column, with the aad of its writer (tests check no call site is missed).
ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    # delivery.contacts.seal_contact (ingest), opened by delivery and events.
    EncryptedColumn(Invite, "id", "contact", invite_contact_aad),
    # services.integrations.put_integration, opened by integration_secrets (queue senders).
    EncryptedColumn(QueueIntegration, "account_id", "secret", integration_secret_aad),
    # incidents.notifications.create_webhook, opened by notifications._post.
    EncryptedColumn(NotificationWebhook, "id", "url", webhook_url_aad),
)


@dataclass
class ColumnResult:
    """What one run did to one column.

    ``changed``: values moved to the current key (with ``dry_run``: that would be moved).
    ``skipped``: values that could not be moved (undecryptable token, unknown key id, a
    hash that no stored value reproduces); they stay as they are. ``remaining``: values still
    under another key after the run (``None``: not counted).
    """

    name: str
    ring: str
    changed: int = 0
    skipped: int = 0
    remaining: int | None = None


@dataclass
class RotationReport:
    dry_run: bool
    encryption_key_id: str
    hmac_key_id: str
    columns: list[ColumnResult] = field(default_factory=list)

    def column(self, name: str) -> ColumnResult:
        return next(c for c in self.columns if c.name == name)

    @property
    def changed(self) -> int:
        return sum(c.changed for c in self.columns)

    @property
    def skipped(self) -> int:
        return sum(c.skipped for c in self.columns)

    @property
    def encryption_remaining(self) -> int:
        """Encrypted values still under an old key: the old key must stay until this is 0."""
        return sum(c.remaining or 0 for c in self.columns if c.ring == "encryption")


# --- shared SQL helpers ------------------------------------------------------------------


def _stale(column: Any, current_key_id: str) -> ColumnElement[bool]:
    """The value's key id prefix is not the current one (substr: ids may hold LIKE's `_`)."""
    prefix = f"{current_key_id}:"
    return func.substr(column, 1, len(prefix)) != prefix


def _is_current(value: str | None, current_key_id: str) -> bool:
    return value is None or value.startswith(f"{current_key_id}:")


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _pg_conditional_update(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    new: Sequence[str],
    old: Sequence[str],
) -> list[Any]:
    """`UPDATE … FROM unnest(arrays)` with the old-value checks; returns updated keys."""
    names = ["k", *(f"new_{c}" for c in new), *(f"old_{c}" for c in old)]
    columns = [key, *new, *old]
    arrays = ", ".join(
        f"${i}::{_pg_array_type(table.c[c])}[]" for i, c in enumerate(columns, start=1)
    )
    assignments = ", ".join(f'"{c}" = v."new_{c}"' for c in new)
    conditions = " AND ".join(
        [f't."{key}" = v."k"', *(f't."{c}" IS NOT DISTINCT FROM v."old_{c}"' for c in old)]
    )
    aliases = ", ".join(f'"{n}"' for n in names)
    # Identifiers come from the table's own metadata; values travel as parameters.
    sql = (
        f'UPDATE "{table.name}" AS t SET {assignments} '  # noqa: S608
        f"FROM unnest({arrays}) AS v({aliases}) WHERE {conditions} "
        f'RETURNING v."k"'
    )
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    records = await driver.fetch(sql, *[[row[n] for row in rows] for n in names])
    return [record[0] for record in records]


async def _update_unchanged(
    session: AsyncSession,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    new: Sequence[str],
    old: Sequence[str],
) -> set[Any]:
    """One UPDATE for many rows of a unique ``key``: ``SET c = row["new_c"]`` where the row's
    ``old`` columns still hold ``row["old_c"]`` (NULL-safe). Rows changed meanwhile by
    another writer are left alone. Returns the keys of the rows updated."""
    if not rows:
        return set()
    if dialect_of(session) == "postgresql":
        return set(await _pg_conditional_update(session, table, key, rows, new, old))
    statement = (
        table.update()
        .where(
            table.c[key] == bindparam("b_k"),
            *(table.c[c].is_not_distinct_from(bindparam(f"b_old_{c}")) for c in old),
        )
        .values({c: bindparam(f"b_new_{c}") for c in new})
    )
    params = [{f"b_{name}": value for name, value in row.items()} for row in rows]
    result = await session.execute(statement, params)
    keys = {row["k"] for row in rows}
    if int(result.rowcount or 0) == len(rows):  # type: ignore[attr-defined]
        return keys
    # Some lost to a concurrent writer: the ones holding our new values are ours.
    wanted = {row["k"]: tuple(row[f"new_{c}"] for c in new) for row in rows}
    current = await session.execute(
        select(table.c[key], *(table.c[c] for c in new)).where(table.c[key].in_(list(keys)))
    )
    return {k for k, *values in current.all() if tuple(values) == wanted[k]}


async def _relabel(
    session: AsyncSession, table: Table, column: str, pairs: Mapping[str, str]
) -> int:
    """``UPDATE table SET column = new WHERE column = old`` for every pair, one statement;
    returns the number of rows changed."""
    if not pairs:
        return 0
    rows = [{"k": old, f"new_{column}": new} for old, new in pairs.items()]
    if dialect_of(session) == "postgresql":
        return len(await _pg_conditional_update(session, table, column, rows, [column], []))
    statement = (
        table.update()
        .where(table.c[column] == bindparam("b_old"))
        .values({column: bindparam("b_new")})
    )
    result = await session.execute(
        statement, [{"b_old": old, "b_new": new} for old, new in pairs.items()]
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _count_matching(session: AsyncSession, column: Any, values: Sequence[str]) -> int:
    total = 0
    for chunk in _chunks(values):
        query = select(func.count()).where(member_of(session, column, chunk))
        total += int((await session.execute(query)).scalar_one())
    return total


async def _copy_unsubscribes(
    session: AsyncSession, pairs: Mapping[str, str], *, dry_run: bool = False
) -> int:
    """For every unsubscribe stored under an old hash of ``pairs`` (old -> new), the same
    unsubscribe (account, channel, time, source) under the new hash, unless it exists.
    Old rows are kept. Returns the rows added (or, with ``dry_run``, missing)."""
    if not pairs:
        return 0
    found: list[Any] = []
    for chunk in _chunks(list(pairs)):
        found.extend(
            (
                await session.execute(
                    select(
                        Unsubscribe.account_id,
                        Unsubscribe.channel,
                        Unsubscribe.address_hash,
                        Unsubscribe.created_at,
                        Unsubscribe.source,
                    ).where(member_of(session, Unsubscribe.address_hash, chunk))
                )
            ).all()
        )
    if not found:
        return 0
    wanted: dict[tuple[str, str, str], dict[str, Any]] = {}
    for account_id, channel, old_hash, created_at, source in found:
        new_hash = pairs[old_hash]
        wanted.setdefault(
            (account_id, channel, new_hash),
            {
                "account_id": account_id,
                "channel": channel,
                "address_hash": new_hash,
                "created_at": created_at,
                "source": source,
            },
        )
    present: set[tuple[str, str, str]] = set()
    new_hashes = sorted({key[2] for key in wanted})
    for chunk in _chunks(new_hashes):
        rows = await session.execute(
            select(Unsubscribe.account_id, Unsubscribe.channel, Unsubscribe.address_hash).where(
                member_of(session, Unsubscribe.address_hash, chunk)
            )
        )
        present.update((a, c, h) for a, c, h in rows.all())
    missing = [row for key, row in wanted.items() if key not in present]
    if dry_run or not missing:
        return len(missing)
    table = table_of(Unsubscribe)
    inserted = 0
    for chunk in _chunks(missing):
        statement = (
            pg_insert(table) if dialect_of(session) == "postgresql" else sqlite_insert(table)
        )
        result = await session.execute(
            statement.values(list(chunk)).on_conflict_do_nothing().returning(table.c.address_hash)
        )
        inserted += len(result.all())
    return inserted


def _matches(hasher: KeyedHasher, stored: str, value: str) -> bool:
    """``stored`` (``"<key id>:<hex>"``) is ``value``'s HMAC under that (known) key."""
    key_id, sep, digest = stored.partition(":")
    if not sep or key_id not in hasher.key_ids:
        return False
    return hmac.compare_digest(hasher.digest(value, key_id), digest)


def _old_key_ids(hasher: KeyedHasher) -> list[str]:
    return [k for k in hasher.key_ids if k != hasher.current_key_id]


def _relabelled_lock(lock: str | None, old_hash: str, new_hash: str) -> str | None:
    """The pending-token lock (``fatigue_lock_key(…, uuid_hash)``) for the new hash."""
    if lock is None or not lock.endswith(f":{old_hash}"):
        return None
    return lock[: -len(old_hash)] + new_hash


async def _in_batches(
    sessions: async_sessionmaker[AsyncSession],
    step: Callable[[AsyncSession, Any], Any],
) -> None:
    """Run ``step(session, after)`` in its own transaction until it returns None; a batch
    that races a concurrent writer into a unique index is retried from the same place."""
    after: Any = None
    while True:
        for attempt in range(1, BATCH_RETRIES + 1):
            try:
                async with sessions() as session, session.begin():
                    last = await step(session, after)
                break
            except IntegrityError:
                log.info("key_rotation_batch_retry", attempt=attempt)
                if attempt == BATCH_RETRIES:
                    raise
        if last is None:
            return
        after = last


# --- encryption ring ----------------------------------------------------------------------


async def _reencrypt_column(
    sessions: async_sessionmaker[AsyncSession],
    spec: EncryptedColumn,
    cipher: FieldCipher,
    batch_size: int,
    dry_run: bool,
) -> ColumnResult:
    result = ColumnResult(spec.name, "encryption")
    table = spec.table
    key, column = table.c[spec.key], table.c[spec.column]
    current = cipher.current_key_id

    async def step(session: AsyncSession, after: Any) -> Any:
        query = select(key, column).where(column.is_not(None), _stale(column, current))
        if after is not None:
            query = query.where(key > after)
        rows = (await session.execute(query.order_by(key).limit(batch_size))).all()
        if not rows:
            return None
        updates: list[dict[str, Any]] = []
        skipped = 0
        for row_key, token in rows:
            aad = spec.aad(row_key)
            try:
                plaintext = cipher.decrypt(token, aad=aad)
            except DecryptionError:
                skipped += 1
                log.warning("key_rotation_undecryptable", column=spec.name, row=row_key)
                continue
            updates.append(
                {
                    "k": row_key,
                    f"new_{spec.column}": cipher.encrypt(plaintext, aad=aad),
                    f"old_{spec.column}": token,
                }
            )
        if dry_run:
            changed = len(updates)
        else:
            done = await _update_unchanged(
                session, table, spec.key, updates, new=[spec.column], old=[spec.column]
            )
            changed = len(done)
        result.changed += changed
        result.skipped += skipped
        return rows[-1][0]

    await _in_batches(sessions, step)
    async with sessions() as session:
        query = select(func.count()).where(column.is_not(None), _stale(column, current))
        result.remaining = int((await session.execute(query)).scalar_one())
    return result


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
            if _matches(hasher, stored_hash, parsed.uuid_value):
                return parsed.uuid_value
    for raw in (email, mobile):
        if raw and _matches(hasher, stored_hash, raw):
            return str(raw)
    return None


@dataclass
class _InviteRehash:
    invite_id: str
    old: dict[str, str | None]
    new: dict[str, str | None]


_HASH_COLUMNS = ("uuid_hash", "email_hash", "mobile_hash")
_INVITE_COLUMNS = (*_HASH_COLUMNS, "fatigue_lock")


def _rehash_invite(
    cipher: FieldCipher, hasher: KeyedHasher, row: Any, skipped: dict[str, int]
) -> _InviteRehash | None:
    """New hashes for one invite row (only stale, verified columns change)."""
    current = hasher.current_key_id
    try:
        contact = open_contact(cipher, row.id, row.contact)
    except DecryptionError:
        log.warning("key_rotation_undecryptable", column="invites.contact", row=row.id)
        for name in _HASH_COLUMNS:
            if not _is_current(getattr(row, name), current):
                skipped[name] += 1
        return None
    old: dict[str, str | None] = {name: getattr(row, name) for name in _INVITE_COLUMNS}
    new = dict(old)
    values: dict[str, str | None] = {
        "email_hash": contact.get("email") or None,
        "mobile_hash": contact.get("mobile") or None,
    }
    if not _is_current(row.uuid_hash, current):
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
        if _is_current(stored, current):
            continue
        assert stored is not None
        value = values.get(name)
        if value is None or not _matches(hasher, stored, value):
            skipped[name] += 1
            log.warning("key_rotation_unverifiable_hash", column=f"invites.{name}", row=row.id)
            continue
        new[name] = keyed_hash(hasher, value)
    if new["uuid_hash"] != old["uuid_hash"]:
        assert old["uuid_hash"] is not None and new["uuid_hash"] is not None
        new["fatigue_lock"] = (
            _relabelled_lock(old["fatigue_lock"], old["uuid_hash"], new["uuid_hash"])
            or old["fatigue_lock"]
        )
    if new == old:
        return None
    return _InviteRehash(row.id, old, new)


async def _release_conflicting_locks(session: AsyncSession, plans: Sequence[_InviteRehash]) -> None:
    """A relabelled lock another invite already holds (ingested under the new key while this
    one's lock was invisible to it) is released instead: one holder per person again."""
    moving = [p for p in plans if p.new["fatigue_lock"] not in (None, p.old["fatigue_lock"])]
    held = await existing_values(
        session, Invite.fatigue_lock, {str(p.new["fatigue_lock"]) for p in moving}
    )
    for plan in moving:
        if plan.new["fatigue_lock"] in held:
            plan.new["fatigue_lock"] = None


async def _rehash_invites(
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
                    _stale(Invite.uuid_hash, current),
                    and_(Invite.email_hash.is_not(None), _stale(Invite.email_hash, current)),
                    and_(Invite.mobile_hash.is_not(None), _stale(Invite.mobile_hash, current)),
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
        await _release_conflicting_locks(session, plans)
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
            ledger = await _count_matching(session, FatigueLedger.uuid_hash, list(uuid_pairs))
            copied = await _copy_unsubscribes(session, address_pairs, dry_run=True)
        else:
            updates = [
                {
                    "k": plan.invite_id,
                    **{f"new_{c}": plan.new[c] for c in _INVITE_COLUMNS},
                    **{f"old_{c}": plan.old[c] for c in _INVITE_COLUMNS},
                }
                for plan in plans
            ]
            done = await _update_unchanged(
                session, invites, "id", updates, new=_INVITE_COLUMNS, old=_INVITE_COLUMNS
            )
            # The pairs hold whoever wrote the invite meanwhile: HMAC(value) is HMAC(value).
            ledger = await _relabel(session, table_of(FatigueLedger), "uuid_hash", uuid_pairs)
            copied = await _copy_unsubscribes(session, address_pairs)
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

    await _in_batches(sessions, step)


def _lock_suffix_differs() -> ColumnElement[bool]:
    """The lock does not end with the invite's own uuid hash."""
    start = func.length(Invite.fatigue_lock) - func.length(Invite.uuid_hash) + 1
    return func.substr(Invite.fatigue_lock, start) != Invite.uuid_hash


async def _repair_locks(
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
            ~_stale(Invite.uuid_hash, current),
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
                _InviteRehash(invite_id, old, {**old, "fatigue_lock": f"{parts[0]}:{uuid_hash}"})
            )
        await _release_conflicting_locks(session, plans)
        if dry_run:
            result.changed += len(plans)
        else:
            updates = [
                {
                    "k": p.invite_id,
                    "new_fatigue_lock": p.new["fatigue_lock"],
                    "old_fatigue_lock": p.old["fatigue_lock"],
                }
                for p in plans
            ]
            done = await _update_unchanged(
                session,
                table_of(Invite),
                "id",
                updates,
                new=["fatigue_lock"],
                old=["fatigue_lock"],
            )
            result.changed += len(done)
        return rows[-1][0]

    await _in_batches(sessions, step)


async def _repair_ledger(
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
            .where(_stale(FatigueLedger.uuid_hash, current), ~_stale(Invite.uuid_hash, current))
        )
        if after is not None:
            query = query.where(FatigueLedger.id > after)
        rows = (await session.execute(query.order_by(FatigueLedger.id).limit(batch_size))).all()
        if not rows:
            return None
        updates = [
            {"k": row_id, "new_uuid_hash": new, "old_uuid_hash": old} for row_id, old, new in rows
        ]
        if dry_run:
            result.changed += len(updates)
        else:
            done = await _update_unchanged(
                session,
                table_of(FatigueLedger),
                "id",
                updates,
                new=["uuid_hash"],
                old=["uuid_hash"],
            )
            result.changed += len(done)
        return rows[-1][0]

    await _in_batches(sessions, step)


async def _hmac_remaining(
    sessions: async_sessionmaker[AsyncSession],
    hasher: KeyedHasher,
    results: Mapping[str, ColumnResult],
) -> None:
    current = hasher.current_key_id

    def stale(column: Any) -> ColumnElement[bool]:
        return and_(column.is_not(None), _stale(column, current))

    live = Invite.contact.is_not(None)
    erased = Invite.contact.is_(None)
    counts: dict[str, ColumnElement[bool]] = {
        "invites.uuid_hash": and_(live, stale(Invite.uuid_hash)),
        "invites.email_hash": and_(live, stale(Invite.email_hash)),
        "invites.mobile_hash": and_(live, stale(Invite.mobile_hash)),
        "invites.fatigue_lock": and_(
            Invite.fatigue_lock.is_not(None),
            or_(_stale(Invite.uuid_hash, current), _lock_suffix_differs()),
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


# --- the whole rotation -------------------------------------------------------------------


async def rotate_keys(
    engine: AsyncEngine,
    cipher: FieldCipher,
    hasher: KeyedHasher,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
) -> RotationReport:
    """Re-encrypt every encrypted column and rehash what can be rehashed, batch by batch.

    Each batch is its own short transaction; a run can be interrupted and started again.
    With ``dry_run`` nothing is written: ``changed`` counts what would change.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    sessions = session_factory(engine)
    report = RotationReport(dry_run, cipher.current_key_id, hasher.current_key_id)
    for spec in ENCRYPTED_COLUMNS:
        column_result = await _reencrypt_column(sessions, spec, cipher, batch_size, dry_run)
        report.columns.append(column_result)
        log.info("key_rotation_column", column=spec.name, changed=column_result.changed)
    hmac_results = {
        name: ColumnResult(name, "hmac")
        for name in (
            "invites.uuid_hash",
            "invites.email_hash",
            "invites.mobile_hash",
            "invites.fatigue_lock",
            "invites (erased)",
            "fatigue_ledger.uuid_hash",
            "unsubscribes.address_hash",
        )
    }
    await _rehash_invites(sessions, cipher, hasher, batch_size, dry_run, hmac_results)
    await _repair_locks(sessions, hasher, batch_size, dry_run, hmac_results["invites.fatigue_lock"])
    await _repair_ledger(
        sessions, hasher, batch_size, dry_run, hmac_results["fatigue_ledger.uuid_hash"]
    )
    await _hmac_remaining(sessions, hasher, hmac_results)
    report.columns.extend(hmac_results.values())
    log.info(
        "key_rotation_done",
        dry_run=dry_run,
        changed=report.changed,
        skipped=report.skipped,
        encryption_remaining=report.encryption_remaining,
    )
    return report


# --- carry-forward at ingest --------------------------------------------------------------


def _carry_pairs(hasher: KeyedHasher, values: Iterable[str | None]) -> dict[str, str]:
    """old-key hash -> current-key hash of each value, for every non-current ring key."""
    old_ids = _old_key_ids(hasher)
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
    return await _copy_unsubscribes(session, pairs)


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
    ledger = await _relabel(session, table_of(FatigueLedger), "uuid_hash", pairs)
    locks = 0
    if lock_scope is not None:
        locks = await _carry_locks(session, pairs, lock_scope)
    return CarriedFatigue(ledger_rows=ledger, locks=locks)


async def _carry_locks(session: AsyncSession, pairs: Mapping[str, str], scope: LockScope) -> int:
    def lock(uuid_hash: str) -> str:
        return fatigue_lock_key(scope.policy_id, scope.fatigue_epoch, scope.sandbox, uuid_hash)

    targets = {lock(old): (old, new) for old, new in pairs.items()}
    holders: list[Any] = []
    for chunk in _chunks(list(targets)):
        holders.extend(
            (
                await session.execute(
                    select(Invite.id, Invite.fatigue_lock, Invite.uuid_hash).where(
                        member_of(session, Invite.fatigue_lock, chunk)
                    )
                )
            ).all()
        )
    plans = [
        _InviteRehash(
            invite_id,
            {"fatigue_lock": old_lock, "uuid_hash": uuid_hash},
            {"fatigue_lock": lock(targets[old_lock][1]), "uuid_hash": targets[old_lock][1]},
        )
        for invite_id, old_lock, uuid_hash in holders
    ]
    await _release_conflicting_locks(session, plans)
    updates = [
        {
            "k": p.invite_id,
            "new_fatigue_lock": p.new["fatigue_lock"],
            "new_uuid_hash": p.new["uuid_hash"],
            "old_fatigue_lock": p.old["fatigue_lock"],
        }
        for p in plans
    ]
    done = await _update_unchanged(
        session,
        table_of(Invite),
        "id",
        updates,
        new=["fatigue_lock", "uuid_hash"],
        old=["fatigue_lock"],
    )
    return len(done)
