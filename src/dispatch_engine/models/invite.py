"""Invites (one per accepted contact) and their messages (one per lineup step reached)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from dispatch_engine.db.types import BigIntPK
from dispatch_engine.models.base import Base


class Invite(Base):
    """A contact's invitation: token, validity, and the encrypted contact details.

    `fatigue_lock` is set while the invite holds fatigue rule 1's "pending token" for its
    person under its policy; the unique index lets the database, not the application,
    guarantee there is only one such invite (R-INV-2), even when files race.
    """

    __tablename__ = "invites"
    __table_args__ = (
        Index(
            "uq_invites_dispatch_external_id",
            "dispatch_id",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        Index("ix_invites_dispatch_state", "dispatch_id", "state"),
        Index("ix_invites_dispatch_id", "dispatch_id", "id"),  # a dispatch's invites, paged
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    dispatch_id: Mapped[str] = mapped_column(String(32))
    policy_id: Mapped[str] = mapped_column(String(32))
    questionnaire_id: Mapped[str] = mapped_column(String(200))
    batch_id: Mapped[str | None] = mapped_column(String(32), default=None)
    row_number: Mapped[int | None] = mapped_column(default=None)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    sandbox: Mapped[bool] = mapped_column(default=False)
    uuid_hash: Mapped[str] = mapped_column(String(80))
    fatigue_epoch: Mapped[int] = mapped_column(default=1)
    fatigue_lock: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    email_hash: Mapped[str | None] = mapped_column(String(80), default=None)
    mobile_hash: Mapped[str | None] = mapped_column(String(80), default=None)
    # The contact's own zone and where it came from: `contact` (the file's time_zone) or
    # `phone_country` (the one zone of the mobile's country); None: the policy's applies.
    time_zone: Mapped[str | None] = mapped_column(String(64), default=None)
    time_zone_source: Mapped[str | None] = mapped_column(String(16), default=None)
    contact: Mapped[str | None] = mapped_column(Text, default=None)  # ciphertext, erasable
    state: Mapped[str] = mapped_column(String(16), default="active")
    end_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime]
    received_at: Mapped[datetime]
    valid_until: Mapped[datetime]
    first_sent_at: Mapped[datetime | None] = mapped_column(default=None)
    responded_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    erased_at: Mapped[datetime | None] = mapped_column(default=None)


CLAIMABLE_STATES = ("pending", "deferred")
# A `delayed` message is decided again only if it was never decided; one that passed but
# whose queue push is late is the relay's to finish (deciding it again would send it twice).
UNDECIDED_DELAY = "not_decided_in_time"
# The claim query's filter (store/messages.py) as the claim index's predicate, from the same
# constants: if the two differ PostgreSQL cannot use the index and each claim sorts every
# message.
CLAIMABLE_PREDICATE = (
    f"state IN ({', '.join(repr(s) for s in CLAIMABLE_STATES)}) "
    f"OR (state = 'delayed' AND reason = '{UNDECIDED_DELAY}')"
)


class Message(Base):
    """One lineup step for one invite: when it may go out, and what became of it.

    `not_before` is when the claim loop may next look at it (due time, or the start of the
    next business window); `due_at` is when it originally came due, kept for ordering.
    `claim_token` + `lease_until` make exactly one worker handle it at a time.
    """

    __tablename__ = "messages"
    __table_args__ = (
        Index(
            "ix_messages_claimable",
            "priority",
            "not_before",
            "due_at",
            "id",
            sqlite_where=text(CLAIMABLE_PREDICATE),
            postgresql_where=text(CLAIMABLE_PREDICATE),
        ),
        Index("ix_messages_invite", "invite_id"),
        Index("ix_messages_dispatch_state_reason", "dispatch_id", "state", "reason"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    invite_id: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(64))
    dispatch_id: Mapped[str] = mapped_column(String(32))
    policy_id: Mapped[str] = mapped_column(String(32))
    lineup_message_id: Mapped[str] = mapped_column(String(32))
    position: Mapped[int]
    channel: Mapped[str] = mapped_column(String(8))
    priority: Mapped[int] = mapped_column(default=1)  # 0 = sandbox, picked first
    state: Mapped[str] = mapped_column(String(16), default="pending")
    rule: Mapped[str | None] = mapped_column(String(40), default=None)
    reason: Mapped[str | None] = mapped_column(String(200), default=None)
    due_at: Mapped[datetime]
    not_before: Mapped[datetime]
    claim_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    resend_of: Mapped[str | None] = mapped_column(String(32), default=None)
    handled_by: Mapped[str | None] = mapped_column(String(64), default=None)  # worker id
    created_at: Mapped[datetime]


class FatigueLedger(Base):
    """One row per invite whose first message went out: what fatigue rule 2 counts."""

    __tablename__ = "fatigue_ledger"
    __table_args__ = (Index("ix_fatigue_ledger_hash_sent", "uuid_hash", "sandbox", "sent_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(64))
    policy_id: Mapped[str] = mapped_column(String(32))
    fatigue_epoch: Mapped[int]
    questionnaire_id: Mapped[str] = mapped_column(String(200))
    invite_id: Mapped[str] = mapped_column(String(32))
    uuid_hash: Mapped[str] = mapped_column(String(80))
    sandbox: Mapped[bool]
    sent_at: Mapped[datetime]


class Unsubscribe(Base):
    """An address (keyed hash only) that gets nothing more on a channel from an account."""

    __tablename__ = "unsubscribes"
    # The worker looks up a batch's address hashes across its accounts and channels.
    __table_args__ = (Index("ix_unsubscribes_address_hash", "address_hash"),)

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8), primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(40), default="event")


class ContactBatch(Base):
    """One posted contact file: status and counts, pollable; rejected rows kept apart."""

    __tablename__ = "contact_batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    dispatch_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="processing")
    content_type: Mapped[str] = mapped_column(String(40))
    rows_total: Mapped[int] = mapped_column(default=0)
    accepted: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # While `processing`: the request storing the file renews this; past it, the request
    # is taken for dead and the batch becomes `interrupted` (see ingest/batches.py).
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # The interrupted batch whose rows this one carried on from (same Idempotency-Key).
    resumed_from: Mapped[str | None] = mapped_column(String(32), default=None)
    # What the file's columns were read as (schemas.contacts.ColumnsOut), shown with it.
    column_report: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class RejectedRow(Base):
    __tablename__ = "rejected_rows"

    batch_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    row_number: Mapped[int] = mapped_column(primary_key=True)
    field: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str] = mapped_column(String(300))


class IdempotencyKey(Base):
    """Stripe-style idempotency: the key, a hash of the request, and the stored answer."""

    __tablename__ = "idempotency_keys"

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(default=None)
    response: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime]
    # While in flight: the batch storing the request's file, and what the request was
    # sent to (dispatch and content type), known before its body is.
    batch_id: Mapped[str | None] = mapped_column(String(32), default=None)
    request_scope: Mapped[str | None] = mapped_column(String(64), default=None)
