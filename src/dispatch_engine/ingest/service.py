"""Contact files → invites and their first messages, chunk by chunk (R-INV-1, R-INV-2).

Each chunk is one transaction: invites, first messages, rejected rows and the batch's
counters commit together, so a crash mid-file keeps every row already counted and a
replay (Idempotency-Key or external id) creates nothing twice.

Fatigue rule 1 is enforced by the database: an invite that holds its person's
pending-token lock has `fatigue_lock` set, and a unique index allows one holder. Two rows
of one person, or two files racing, give at most one holder; the others' first messages
are suppressed with `fatigue_pending_token` when they come due (unless the holder's
token has expired or been answered by then).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from operator import itemgetter
from typing import Any

import structlog

from dispatch_engine.context import AppContext
from dispatch_engine.db.leases import backoff
from dispatch_engine.db.session import AsyncSession, DBAPIError, IntegrityError
from dispatch_engine.db.statistics import GrowthAnalyzer
from dispatch_engine.db.transient import transient_kind
from dispatch_engine.delivery.facts import PolicyRules, fatigue_of
from dispatch_engine.ingest import batches
from dispatch_engine.ingest.carry_forward import (
    LockScope,
    carry_forward_fatigue,
    carry_forward_unsubscribes,
)
from dispatch_engine.ingest.rows import ContactIn, Rejection, parse_contact
from dispatch_engine.models import Dispatch, LineupMessage, Policy, new_id
from dispatch_engine.observability import metrics
from dispatch_engine.rules.business_hours import window_zone
from dispatch_engine.rules.delays import due_time
from dispatch_engine.rules.fatigue import fatigue_lock_key
from dispatch_engine.security.hashing import KeyedHasher, keyed_hash
from dispatch_engine.security.sealing import seal_contact
from dispatch_engine.store import batches as batch_store
from dispatch_engine.store import ingest as store
from dispatch_engine.store.messages import insert_messages

log = structlog.get_logger(__name__)
CHUNK_RETRIES = 6
RETRY_BASE_SECONDS = 0.05
RETRY_CAP_SECONDS = 1.0
YIELD_EVERY_ROWS = 50  # rows prepared between two chances for the writing chunk to progress


def new_token() -> str:
    """An unguessable survey token: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class IngestTarget:
    """What every row of one file is checked and scheduled against."""

    dispatch: Dispatch
    policy: Policy
    lineup: Sequence[LineupMessage]
    received_at: datetime

    @cached_property
    def channels(self) -> frozenset[str]:
        return frozenset(step.channel for step in self.lineup)

    @property
    def valid_until(self) -> datetime:
        return self.received_at + timedelta(seconds=self.dispatch.token_validity_seconds)

    @cached_property
    def _window(self) -> PolicyRules:
        return PolicyRules.of(self.policy)

    @cached_property
    def first_due_varies(self) -> bool:
        """Whether the first message's due time depends on the contact: its delay has
        calendar days, counted in the contact's zone when the policy reads windows there."""
        first = self.lineup[0] if self.lineup else None
        return first is not None and first.delay.days > 0 and self._window.contact_zone_applies

    def first_due(self, contact_zone: str | None) -> datetime:
        """When the first message comes due: its delay counted from the file's receipt, in
        the zone the contact's window is read in (the policy's, or the contact's own)."""
        rules = self._window
        zone = window_zone(rules.hours, contact_zone if rules.contact_zone_applies else None)
        return due_time(self.received_at, self.lineup[0].delay, zone)


@dataclass
class IngestCounts:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)


async def ingest_stream(
    context: AppContext,
    batch_id: str,
    target: IngestTarget,
    rows: AsyncIterator[tuple[int, dict[str, Any]]],
) -> IngestCounts:
    """Consume rows in chunks of `upload_batch_rows`; returns the totals.

    Two chunks are in hand at a time: while one is written to the database, the next is
    parsed, hashed and sealed, so the database's work and ours overlap. Writes stay in
    file order, one transaction per chunk, each seeing the chunks before it committed.
    """
    totals = IngestCounts()
    chunk: list[tuple[int, dict[str, Any]]] = []
    size = context.settings.upload_batch_rows
    writing: asyncio.Task[IngestCounts] | None = None
    statistics = GrowthAnalyzer(context.engine, first=size)

    async def hand_over(rows_in_hand: list[tuple[int, dict[str, Any]]]) -> None:
        nonlocal writing
        prepared = await prepare_chunk(context, batch_id, target, rows_in_hand)
        if writing is not None:
            _add(totals, await writing)
            statistics.grew_to(totals.accepted)
        writing = asyncio.create_task(store_chunk(context, batch_id, target, prepared))

    try:
        async for item in rows:
            chunk.append(item)
            if len(chunk) >= size:
                await hand_over(chunk)
                chunk = []
    finally:
        # Rows read before an unreadable part of the file are stored, whatever the chunk size.
        try:
            if chunk:
                await hand_over(chunk)
        finally:
            if writing is not None:
                _add(totals, await writing)
                statistics.grew_to(totals.accepted)
    return totals


def _add(totals: IngestCounts, counts: IngestCounts) -> None:
    metrics.CONTACTS.labels("accepted").inc(counts.accepted)
    metrics.CONTACTS.labels("rejected").inc(counts.rejected)
    metrics.CONTACTS.labels("duplicate").inc(counts.duplicates)
    totals.rows += counts.rows
    totals.accepted += counts.accepted
    totals.rejected += counts.rejected
    totals.duplicates += counts.duplicates


@dataclass
class _Candidate:
    """One valid row, ready to insert unless the database says it is a duplicate."""

    external_id: str | None
    uuid_hash: str
    lock_key: str  # the person's pending-token lock under this policy (rule 1)
    invite: dict[str, Any]
    message: dict[str, Any] | None
    contact: ContactIn  # normalised values, for carrying history across an HMAC rotation


@dataclass
class PreparedChunk:
    """A chunk parsed, hashed and sealed: everything but what only the database knows."""

    rows: int
    rejections: list[Rejection]
    candidates: list[_Candidate]


async def prepare_chunk(
    context: AppContext,
    batch_id: str,
    target: IngestTarget,
    chunk: Sequence[tuple[int, dict[str, Any]]],
) -> PreparedChunk:
    """Parse, validate, hash and seal a chunk (CPU only; yields now and then so the chunk
    being written meanwhile keeps its database round trips moving).

    Candidates stay in file order (the first row of a person or an external id wins), but
    their ids ascend in lock order (`_ids_in_lock_order`), so inserting by id takes the
    pending-token locks in one global order and keeps every id index append-only."""
    channels, uuid_field = target.channels, target.policy.uuid_field
    hasher, cipher = context.hasher, context.cipher
    invite_template, message_template = _shared_values(target, batch_id, context.clock.now())
    prepared = PreparedChunk(rows=len(chunk), rejections=[], candidates=[])
    parsed: list[tuple[int, ContactIn, str]] = []
    for index, (number, row) in enumerate(chunk):
        if index % YIELD_EVERY_ROWS == YIELD_EVERY_ROWS - 1:
            await asyncio.sleep(0)
        contact = parse_contact(number, row, channels=channels, uuid_field=uuid_field)
        if isinstance(contact, Rejection):
            prepared.rejections.append(contact)
            continue
        parsed.append((number, contact, keyed_hash(hasher, contact.uuid_value)))
    policy = target.policy
    sandbox = bool(policy.is_sandbox)
    keys = [fatigue_lock_key(policy.id, policy.fatigue_epoch, sandbox, h) for _, _, h in parsed]
    invite_ids, message_ids = _ids_in_lock_order(keys)
    for index, (number, contact, uuid_hash) in enumerate(parsed):
        if index % YIELD_EVERY_ROWS == YIELD_EVERY_ROWS - 1:
            await asyncio.sleep(0)
        invite_id = invite_ids[index]
        email, mobile = contact.email, contact.mobile
        invite = invite_template.copy()
        invite.update(
            id=invite_id,
            row_number=number,
            token=new_token(),
            external_id=contact.external_id,
            uuid_hash=uuid_hash,
            email_hash=_address_hash(hasher, email, contact.uuid_value, uuid_hash),
            mobile_hash=_address_hash(hasher, mobile, contact.uuid_value, uuid_hash),
            time_zone=contact.time_zone,
            time_zone_source=contact.time_zone_source,
            contact=seal_contact(
                cipher, invite_id, email=email, mobile=mobile, attributes=contact.attributes
            ),
        )
        message = None
        if message_template is not None:
            message = message_template.copy()
            message.update(id=message_ids[index], invite_id=invite_id)
            if target.first_due_varies:
                due = target.first_due(contact.time_zone)
                message.update(due_at=due, not_before=due)
        prepared.candidates.append(
            _Candidate(contact.external_id, uuid_hash, keys[index], invite, message, contact)
        )
    return prepared


def _ids_in_lock_order(keys: list[str]) -> tuple[list[str], list[str]]:
    """Invite and message ids for rows in file order, ascending in the order of the rows'
    pending-token lock `keys` (file order among rows of one key).

    The unique lock index makes one file's insert wait for another's that holds the same
    key; two files of the same people in other orders would wait on each other (deadlock).
    Inserted by id, every chunk takes its keys in one global order: the second waits,
    neither deadlocks. Ids are time-ordered, so the ids of a chunk sorted are still the
    newest of their tables: the indexes on ids keep growing at their right edge."""
    rank = [0] * len(keys)
    for position, index in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
        rank[index] = position
    invite_ids = sorted(new_id("inv") for _ in keys)
    message_ids = sorted(new_id("m") for _ in keys)
    return [invite_ids[r] for r in rank], [message_ids[r] for r in rank]


def _address_hash(
    hasher: KeyedHasher, address: str | None, uuid_value: str, uuid_hash: str
) -> str | None:
    """An address's keyed hash. The UUID field is usually the email or the mobile itself,
    whose hash is then already known: one HMAC per row saved."""
    if not address:
        return None
    return uuid_hash if address == uuid_value else keyed_hash(hasher, address)


def _shared_values(
    target: IngestTarget, batch_id: str, now: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The invite and first-message values every row of a chunk shares, read once (ORM
    attribute access per row cost more than copying a dict); no message without a lineup."""
    dispatch, policy = target.dispatch, target.policy
    first = target.lineup[0] if target.lineup else None
    sandbox = bool(getattr(policy, "is_sandbox", False))
    invite = {
        "account_id": dispatch.account_id,
        "dispatch_id": dispatch.id,
        "policy_id": policy.id,
        "questionnaire_id": dispatch.questionnaire_id,
        "batch_id": batch_id,
        "sandbox": sandbox,
        "fatigue_epoch": policy.fatigue_epoch,
        "fatigue_lock": None,
        "state": "active" if first else "completed",
        "created_at": now,
        "received_at": target.received_at,
        "valid_until": target.valid_until,
    }
    if first is None:
        return invite, None
    due = target.first_due(None)
    message = {
        "account_id": dispatch.account_id,
        "dispatch_id": dispatch.id,
        "policy_id": policy.id,
        "lineup_message_id": first.id,
        "position": first.position or 1,
        "channel": first.channel,
        "priority": 0 if sandbox else 1,
        "state": "pending",
        "due_at": due,
        "not_before": due,
        "attempts": 0,
        "created_at": now,
    }
    return invite, message


async def store_chunk(
    context: AppContext, batch_id: str, target: IngestTarget, prepared: PreparedChunk
) -> IngestCounts:
    """One transaction: drop duplicates, take fatigue locks, insert, count.

    Run again, whole, when a racing file took an external id or a fatigue lock first
    (the next attempt sees its rows), or when PostgreSQL aborted it to break a deadlock
    or a serialization conflict with another file (after a jittered pause). Locks are
    taken in one global order (see `_ids_in_lock_order`), so deadlocks are rare to begin with.
    """
    for attempt in range(1, CHUNK_RETRIES + 1):
        try:
            async with context.sessions() as session, session.begin():
                return await _store_chunk(session, context, batch_id, target, prepared)
        except IntegrityError:
            kind = "unique"
            if attempt == CHUNK_RETRIES:
                raise
        except DBAPIError as error:
            kind = transient_kind(error) or ""
            if not kind or attempt == CHUNK_RETRIES:
                raise
            delay = backoff(attempt, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS)
            await asyncio.sleep(delay.total_seconds())
        metrics.TRANSACTION_RETRIES.labels("ingest_chunk", kind).inc()
        log.info("ingest_chunk_retry", batch=batch_id, attempt=attempt, kind=kind)
    raise AssertionError("unreachable")


def _by_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by id: for invites, their pending-token locks in one global order (see
    `_ids_in_lock_order`); for every id index, appends at its right edge."""
    return sorted(rows, key=itemgetter("id"))


async def _store_chunk(
    session: AsyncSession,
    context: AppContext,
    batch_id: str,
    target: IngestTarget,
    prepared: PreparedChunk,
) -> IngestCounts:
    counts = IngestCounts(rows=prepared.rows, rejections=list(prepared.rejections))
    now = context.clock.now()
    dispatch, policy = target.dispatch, target.policy
    kept = await _drop_known_external_ids(session, dispatch.id, prepared.candidates, counts)
    rule1 = fatigue_of(policy).pending_token.enabled
    if len(context.hasher.key_ids) > 1:
        await _carry_forward(session, context.hasher, policy, kept, rule1=rule1)
    lock_keys = [candidate.lock_key for candidate in kept]
    locks = await _assign_locks(session, lock_keys, now) if rule1 else {}
    invites: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for index, candidate in enumerate(kept):
        candidate.invite["fatigue_lock"] = locks.get(index)  # set afresh on every attempt
        invites.append(candidate.invite)
        if candidate.message is not None:
            messages.append(candidate.message)
    await store.insert_invites(session, _by_id(invites))
    await insert_messages(session, _by_id(messages))
    counts.accepted = len(invites)
    counts.rejected = len(counts.rejections)
    await _record_progress(session, batch_id, counts)
    return counts


async def _carry_forward(
    session: AsyncSession,
    hasher: KeyedHasher,
    policy: Policy,
    kept: list[_Candidate],
    *,
    rule1: bool,
) -> None:
    """During an HMAC key rotation, bring these people's unsubscribes and fatigue history
    (ledger, pending-token lock) from old-key hashes to the current key, before the locks
    are assigned, so a rotation forgets nobody's opt-out or fatigue."""
    scope = LockScope(policy.id, policy.fatigue_epoch, bool(policy.is_sandbox)) if rule1 else None
    await carry_forward_fatigue(
        session, hasher, [c.contact.uuid_value for c in kept], lock_scope=scope
    )
    addresses = [a for c in kept for a in (c.contact.email, c.contact.mobile) if a]
    await carry_forward_unsubscribes(session, hasher, addresses)


async def _drop_known_external_ids(
    session: AsyncSession,
    dispatch_id: str,
    candidates: list[_Candidate],
    counts: IngestCounts,
) -> list[_Candidate]:
    """The same external id twice in one dispatch creates one invite (earlier file or row)."""
    wanted = {c.external_id for c in candidates if c.external_id}
    if not wanted:
        return candidates
    known = await store.known_external_ids(session, dispatch_id, wanted)
    kept = []
    for candidate in candidates:
        external_id = candidate.external_id
        if external_id:
            if external_id in known:
                counts.duplicates += 1
                continue
            known.add(external_id)
        kept.append(candidate)
    return kept


async def _assign_locks(session: AsyncSession, keys: list[str], now: datetime) -> dict[int, str]:
    """Row index → pending-token lock, for the first row of each person with no holder
    (`keys`: the rows' lock keys, worked out with their ids in `prepare_chunk`)."""
    if not keys:
        return {}
    unique = set(keys)
    # Who holds these locks now, in one pass over the lock index. A lock whose token
    # expired or was answered is stale: it is released (rare) and can be taken again.
    holders = await store.lock_holders(session, unique, now)
    released = sorted(invite_id for invite_id, _, is_stale in holders if is_stale)
    if released:
        await store.release_locks(session, released)
    held = {key for _, key, is_stale in holders if not is_stale}
    locks: dict[int, str] = {}
    for index, key in enumerate(keys):
        if key not in held:
            locks[index] = key
            held.add(key)
    return locks


async def _record_progress(session: AsyncSession, batch_id: str, counts: IngestCounts) -> None:
    await batch_store.insert_rejected_rows(
        session,
        [
            {
                "batch_id": batch_id,
                "row_number": r.row,
                "field": r.field[:120],
                "reason": r.reason[:300],
            }
            for r in counts.rejections
        ],
    )
    progressed = await batch_store.add_progress(
        session,
        batch_id,
        rows=counts.rows,
        accepted=counts.accepted,
        rejected=counts.rejected,
        duplicates=counts.duplicates,
    )
    batches.check_fence(progressed)
