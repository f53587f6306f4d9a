"""Operator pauses: a dispatch, a policy, a whole account, or a channel for everyone."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from dispatch_engine.models.base import Base


class OperatorPause(Base):
    __tablename__ = "operator_pauses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # "dispatch" | "policy" | "account" | "channel"
    target: Mapped[str] = mapped_column(String(64))  # its id, or "email" / "sms"
    incident: Mapped[str | None] = mapped_column(String(64), default=None)
    reason: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    lifted_at: Mapped[datetime | None] = mapped_column(default=None)
    lifted_by: Mapped[str | None] = mapped_column(String(32), default=None)
