"""Accounts (tenants, ids chosen by EM) and their single queue integration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dispatch_engine.models.base import Base


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    admins: Mapped[list[Any]] = mapped_column(default=list)
    decision_maker: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class QueueIntegration(Base):
    """Where an account's messages go. `secret` holds ciphertext only (write-only field)."""

    __tablename__ = "queue_integrations"

    account_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret: Mapped[str | None] = mapped_column(Text, default=None)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    verify_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The last push the queue refused as a whole (set and cleared by the relay).
    push_error: Mapped[str | None] = mapped_column(Text, default=None)
    push_error_at: Mapped[datetime | None] = mapped_column(default=None)
