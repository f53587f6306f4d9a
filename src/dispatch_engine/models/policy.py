"""Delivery Policies and their lineup messages (soft-deleted, so history keeps its ids)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from dispatch_engine.models.base import Base
from dispatch_engine.rules.delays import Delay


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (
        Index(
            "uq_policies_account_name_live",
            "account_id",
            "name_key",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "uq_policies_one_sandbox",
            "account_id",
            unique=True,
            sqlite_where=text("is_sandbox"),
            postgresql_where=text("is_sandbox"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200))
    is_sandbox: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="active")
    uuid_field: Mapped[str] = mapped_column(String(100), default="email")
    fatigue_epoch: Mapped[int] = mapped_column(default=1)
    fatigue: Mapped[dict[str, Any]] = mapped_column(default=dict)
    business_rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dnd_webhooks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class LineupMessage(Base):
    """One step of a policy's lineup. `position` is 1-based among live steps; None once deleted.

    Its delay is `delay_days` calendar days, then `delay_seconds` of exact time (`P1DT2H`:
    1 and 7200; `PT24H`: 0 and 86400); `delay` gives both as one value.
    """

    __tablename__ = "lineup_messages"
    __table_args__ = (Index("ix_lineup_messages_policy_position", "policy_id", "position"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    policy_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("policies.id", ondelete="CASCADE")
    )
    position: Mapped[int | None] = mapped_column(default=None)
    channel: Mapped[str] = mapped_column(String(8))
    delay_days: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    delay_seconds: Mapped[int]
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def delay(self) -> Delay:
        return Delay(days=self.delay_days or 0, seconds=self.delay_seconds)

    @delay.setter
    def delay(self, value: Delay) -> None:
        self.delay_days, self.delay_seconds = value.days, value.seconds


class PolicyVersion(Base):
    """One immutable version of a policy: what it was after change `number` (the policy's
    `version`, its ETag, after that change), who made it and which change it was.

    `snapshot` is the policy as the API shows it, without what derives from it (checks,
    totals) and without secrets (DND webhook URLs keep their query names, not values)."""

    __tablename__ = "policy_versions"

    policy_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    created_at: Mapped[datetime]
    key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    change: Mapped[str] = mapped_column(String(64))
    snapshot: Mapped[dict[str, Any]]
