"""The transactional outbox, and the embedded `local` queue it is relayed into."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from dispatch_engine.db.types import BigIntPK
from dispatch_engine.models.base import Base


class OutboxEntry(Base):
    """A queue message written in the same transaction that marked its message sent.

    The relay pushes pending rows in id order and deletes them only after the queue
    acknowledged them, so a crash anywhere loses nothing (at-least-once). `delivered_at`
    is set only on rows that earlier versions marked instead of deleting; the erase job
    removes those with their invite's contact.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "next_attempt_at",
            "id",
            sqlite_where=text("delivered_at IS NULL AND failed_at IS NULL"),
            postgresql_where=text("delivered_at IS NULL AND failed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(32), unique=True)
    account_id: Mapped[str] = mapped_column(String(64))
    invite_id: Mapped[str] = mapped_column(String(32))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    ready_at: Mapped[datetime]  # when the message could first go out (due, or window open)
    next_attempt_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class LocalQueueMessage(Base):
    """The `local` queue kind: messages kept in the engine's own store, read by pull/ack."""

    __tablename__ = "local_queue"
    __table_args__ = (Index("ix_local_queue_account_visible", "account_id", "visible_at", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(32), unique=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    enqueued_at: Mapped[datetime]
    visible_at: Mapped[datetime]
    receipt: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    receive_count: Mapped[int] = mapped_column(default=0)
