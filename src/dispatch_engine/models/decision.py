"""The decision trace: one compact row per decision on a message (issue 22, item 2)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from dispatch_engine.db.types import BigIntPK
from dispatch_engine.models.base import Base

# What happened to the message: the engine's outcomes (`sent`, `deferred`, `held`,
# `suppressed`), an edit's (`retimed`), a resume's (`released`) and the relay's (`failed`).
DECISION_KINDS = ("sent", "deferred", "held", "suppressed", "retimed", "released", "failed")


class MessageDecision(Base):
    """A decision on a message: what, by which rule and why (slugs, never personal data),
    when, until when (a deferral or a new due time), under which policy version, by which
    worker (None: an API request). Appended only; pruned after the retention setting.

    The key is a big-int identity, so id order is insertion order (the prune walks it)."""

    __tablename__ = "message_decisions"
    __table_args__ = (Index("ix_message_decisions_invite_at", "invite_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(32))
    invite_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(40), default=None)
    reason: Mapped[str | None] = mapped_column(String(200), default=None)
    until: Mapped[datetime | None] = mapped_column(default=None)
    policy_version: Mapped[int | None] = mapped_column(default=None)
    worker: Mapped[str | None] = mapped_column(String(64), default=None)
