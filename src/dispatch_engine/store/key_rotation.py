"""Key rotation's tables: the encrypted-column registry, and the invites, fatigue ledger
rows and pending-token locks whose hashes move to the current HMAC key (no commit here).
The table-agnostic pieces (old-key pages, counts, conditional rewrites) are in
`db/rekeying.py`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch_engine.db.bulk import chunks, member_of
from dispatch_engine.db.conditional import relabel, update_unchanged
from dispatch_engine.db.rekeying import Rows, under_old_key, write_unchanged
from dispatch_engine.models import (
    FatigueLedger,
    IncidentCommunication,
    Invite,
    NotificationWebhook,
    Policy,
    QueueIntegration,
    Unsubscribe,
)
from dispatch_engine.models.base import Base, table_of
from dispatch_engine.security.sealing import (
    communication_recipient_aad,
    contact_aad,
    integration_secret_aad,
    webhook_url_aad,
)


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
    # security.sealing.seal_contact (ingest), opened by delivery and events.
    EncryptedColumn(Invite, "id", "contact", contact_aad),
    # services.integrations.put_integration, opened by queues.factory.integration_secrets.
    EncryptedColumn(QueueIntegration, "account_id", "secret", integration_secret_aad),
    # incidents.notifications.create_webhook, opened by notifications._post.
    EncryptedColumn(NotificationWebhook, "id", "url", webhook_url_aad),
    # incidents.communications.record_communication, opened by communication_out.
    EncryptedColumn(IncidentCommunication, "id", "recipient", communication_recipient_aad),
)


# --- invites -------------------------------------------------------------------------------


async def invites_to_rehash(
    session: AsyncSession, current_key_id: str, *, after: Any, limit: int
) -> Rows:
    """Up to `limit` invites that hold contact data and a hash under an old key, by id after
    `after`: id, external_id, time_zone and its source, the hashes, fatigue_lock, contact
    and their policy's uuid_field."""
    query = (
        select(
            Invite.id,
            Invite.external_id,
            Invite.time_zone,
            Invite.time_zone_source,
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
                under_old_key(Invite.uuid_hash, current_key_id),
                and_(
                    Invite.email_hash.is_not(None), under_old_key(Invite.email_hash, current_key_id)
                ),
                and_(
                    Invite.mobile_hash.is_not(None),
                    under_old_key(Invite.mobile_hash, current_key_id),
                ),
            ),
        )
    )
    if after is not None:
        query = query.where(Invite.id > after)
    return list((await session.execute(query.order_by(Invite.id).limit(limit))).all())


async def rewrite_invites(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> set[Any]:
    """Conditional rewrite of the invites' `columns` (each row: `k`, `new_<c>`, `old_<c>`);
    returns the ids written (an invite changed meanwhile is left alone)."""
    return await update_unchanged(session, table_of(Invite), "id", rows, new=columns, old=columns)


def _lock_suffix_differs() -> ColumnElement[bool]:
    """The lock does not end with the invite's own uuid hash."""
    start = func.length(Invite.fatigue_lock) - func.length(Invite.uuid_hash) + 1
    return func.substr(Invite.fatigue_lock, start) != Invite.uuid_hash


async def invites_with_stale_locks(
    session: AsyncSession, current_key_id: str, *, after: Any, limit: int
) -> Rows:
    """Up to `limit` (id, fatigue_lock, uuid_hash) of invites whose hash is current but whose
    lock does not end with it, by id after `after`."""
    query = select(Invite.id, Invite.fatigue_lock, Invite.uuid_hash).where(
        Invite.fatigue_lock.is_not(None),
        ~under_old_key(Invite.uuid_hash, current_key_id),
        _lock_suffix_differs(),
    )
    if after is not None:
        query = query.where(Invite.id > after)
    return list((await session.execute(query.order_by(Invite.id).limit(limit))).all())


async def rewrite_invite_locks(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]], *, dry_run: bool
) -> int:
    """Conditional rewrite of the invites' fatigue_lock; the rows written (or that would be)."""
    return await write_unchanged(
        session,
        table_of(Invite),
        "id",
        rows,
        new=["fatigue_lock"],
        old=["fatigue_lock"],
        dry_run=dry_run,
    )


# --- fatigue ledger ------------------------------------------------------------------------


async def count_ledger_rows_of(session: AsyncSession, uuid_hashes: Sequence[str]) -> int:
    """How many ledger rows are recorded under any of `uuid_hashes`."""
    total = 0
    for chunk in chunks(uuid_hashes):
        query = select(func.count()).where(member_of(session, FatigueLedger.uuid_hash, chunk))
        total += int((await session.execute(query)).scalar_one())
    return total


async def relabel_ledger(session: AsyncSession, pairs: Mapping[str, str]) -> int:
    """Ledger rows under an old uuid hash of `pairs` (old -> new) move to the new one."""
    return await relabel(session, table_of(FatigueLedger), "uuid_hash", pairs)


async def ledger_rows_behind_invites(
    session: AsyncSession, current_key_id: str, *, after: Any, limit: int
) -> Rows:
    """Up to `limit` (id, uuid_hash, invite's uuid_hash) of ledger rows under an old key
    whose invite's hash is current, by id after `after`."""
    query = (
        select(FatigueLedger.id, FatigueLedger.uuid_hash, Invite.uuid_hash)
        .join(Invite, Invite.id == FatigueLedger.invite_id)
        .where(
            under_old_key(FatigueLedger.uuid_hash, current_key_id),
            ~under_old_key(Invite.uuid_hash, current_key_id),
        )
    )
    if after is not None:
        query = query.where(FatigueLedger.id > after)
    return list((await session.execute(query.order_by(FatigueLedger.id).limit(limit))).all())


async def rewrite_ledger_hashes(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]], *, dry_run: bool
) -> int:
    """Conditional rewrite of ledger rows' uuid_hash; the rows written (or that would be)."""
    return await write_unchanged(
        session,
        table_of(FatigueLedger),
        "id",
        rows,
        new=["uuid_hash"],
        old=["uuid_hash"],
        dry_run=dry_run,
    )


# --- what is left ---------------------------------------------------------------------------


async def count_stale_hashes(session: AsyncSession, current_key_id: str) -> dict[str, int]:
    """Per report line (`invites.uuid_hash`, …, `unsubscribes.address_hash`), how many values
    are still under an old HMAC key."""
    current = current_key_id

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
    remaining: dict[str, int] = {}
    for name, condition in counts.items():
        query = select(func.count()).select_from(Invite).where(condition)
        remaining[name] = int((await session.execute(query)).scalar_one())
    for name, column in (
        ("fatigue_ledger.uuid_hash", FatigueLedger.uuid_hash),
        ("unsubscribes.address_hash", Unsubscribe.address_hash),
    ):
        query = select(func.count()).where(stale(column))
        remaining[name] = int((await session.execute(query)).scalar_one())
    return remaining
