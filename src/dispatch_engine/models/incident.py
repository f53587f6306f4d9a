"""Incident operations (R-INC-1..8): incidents, their notices, approvals, resends, webhooks.

Clock due times are stored with the incident (NULL while a clock is not running) so that
`?overdue=true` is one indexed comparison; `incidents/clocks.py` computes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from dispatch_engine.db.types import BigIntPK
from dispatch_engine.models.base import Base

_INCIDENT_FK = "incidents.id"


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_state_reported", "state", "reported_at"),
        Index("ix_incidents_reported", "reported_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    service: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    impact: Mapped[str | None] = mapped_column(Text, default=None)
    severity: Mapped[str | None] = mapped_column(String(2), default=None)
    state: Mapped[str] = mapped_column(String(16), default="reported")
    started_at: Mapped[datetime]
    symptoms: Mapped[str | None] = mapped_column(Text, default=None)
    steps_to_reproduce: Mapped[str | None] = mapped_column(Text, default=None)
    evidence_links: Mapped[list[Any]] = mapped_column(default=list)
    stakeholders: Mapped[list[Any]] = mapped_column(default=list)
    commander: Mapped[str | None] = mapped_column(String(200), default=None)
    communicator: Mapped[str | None] = mapped_column(String(200), default=None)
    customer_tickets: Mapped[list[Any]] = mapped_column(default=list)
    reported_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    investigating_at: Mapped[datetime | None] = mapped_column(default=None)
    identified_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_update_at: Mapped[datetime | None] = mapped_column(default=None)
    ack_due_at: Mapped[datetime | None] = mapped_column(default=None)
    update_due_at: Mapped[datetime | None] = mapped_column(default=None)
    postmortem_due_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(default=1)


class IncidentAccount(Base):
    """An account the incident impacts (a table, so `?account=` is an indexed lookup)."""

    __tablename__ = "incident_accounts"
    __table_args__ = (Index("ix_incident_accounts_account", "account_id"),)

    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_INCIDENT_FK, ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class IncidentStatusUpdate(Base):
    """A public status notice from one of three templates; only its own fields are public."""

    __tablename__ = "incident_status_updates"
    __table_args__ = (
        Index("ix_incident_status_updates_incident", "incident_id", "posted_at"),
        Index("ix_incident_status_updates_posted", "posted_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_INCIDENT_FK, ondelete="CASCADE")
    )
    template: Mapped[str] = mapped_column(String(16))
    service: Mapped[str] = mapped_column(String(200))
    symptoms: Mapped[str | None] = mapped_column(Text, default=None)
    eta: Mapped[datetime | None] = mapped_column(default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    accounts: Mapped[list[Any]] = mapped_column(default=list)
    text: Mapped[str] = mapped_column(Text)
    posted_at: Mapped[datetime]
    posted_by: Mapped[str | None] = mapped_column(String(32), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class IncidentCommunication(Base):
    """R-INC-6: one contact with a customer about the incident."""

    __tablename__ = "incident_communications"
    __table_args__ = (Index("ix_incident_communications_incident", "incident_id", "at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_INCIDENT_FK, ondelete="CASCADE")
    )
    account_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    # Sealed: a FieldCipher token bound to the row id (incidents/communications.py).
    recipient: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    what: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str | None] = mapped_column(String(32), default=None)


class IncidentApproval(Base):
    """R-INC-5: an account owner's or admin's approval to resend sendings past the threshold."""

    __tablename__ = "incident_approvals"
    __table_args__ = (Index("ix_incident_approvals_incident", "incident_id", "account_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_INCIDENT_FK, ondelete="CASCADE")
    )
    account_id: Mapped[str] = mapped_column(String(64))
    approver_name: Mapped[str | None] = mapped_column(String(200), default=None)
    approver_email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(8))
    approved_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text, default=None)
    scope: Mapped[str] = mapped_column(String(16))  # "listed" | "all_impacted"
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str | None] = mapped_column(String(32), default=None)


class IncidentApprovalSending(Base):
    """The sendings an approval covers, fixed when it is recorded."""

    __tablename__ = "incident_approval_sendings"
    __table_args__ = (Index("ix_incident_approval_sendings_message", "message_id"),)

    approval_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("incident_approvals.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class IncidentResend(Base):
    """One resend. The unique key makes "at most once per approval" the database's job:
    `approval_key` is the approval id, or `threshold` for a resend within the threshold."""

    __tablename__ = "incident_resends"
    __table_args__ = (
        UniqueConstraint("original_message_id", "approval_key", name="uq_incident_resends_once"),
        Index("ix_incident_resends_incident", "incident_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_INCIDENT_FK, ondelete="CASCADE")
    )
    account_id: Mapped[str] = mapped_column(String(64))
    original_message_id: Mapped[str] = mapped_column(String(32))
    approval_key: Mapped[str] = mapped_column(String(32))
    approval_id: Mapped[str | None] = mapped_column(String(32), default=None)
    new_message_id: Mapped[str] = mapped_column(String(32), unique=True)
    window_seconds: Mapped[int]
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)


class IncidentPostmortem(Base):
    __tablename__ = "incident_postmortems"

    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_INCIDENT_FK, ondelete="CASCADE"), primary_key=True
    )
    findings: Mapped[str] = mapped_column(Text)
    improvement_actions: Mapped[list[Any]] = mapped_column(default=list)
    link: Mapped[str | None] = mapped_column(String(2048), default=None)
    service_credits: Mapped[list[Any]] = mapped_column(default=list)
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str | None] = mapped_column(String(32), default=None)
    updated_at: Mapped[datetime]


class IncidentClockAlert(Base):
    """A clock that went overdue, reported once: the key is (incident, clock, due time)."""

    __tablename__ = "incident_clock_alerts"

    incident_id: Mapped[str] = mapped_column(
        String(32), ForeignKey(_INCIDENT_FK, ondelete="CASCADE"), primary_key=True
    )
    clock: Mapped[str] = mapped_column(String(16), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(primary_key=True)
    raised_at: Mapped[datetime]


class NotificationWebhook(Base):
    """An operator's outbound webhook (e.g. Slack). The URL often embeds a token: it is
    stored encrypted; only its origin is shown."""

    __tablename__ = "notification_webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)  # ciphertext
    origin: Mapped[str] = mapped_column(String(300))
    events: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)


class IncidentNotification(Base):
    """Outbox of webhook deliveries, written with the change, drained by the clock job."""

    __tablename__ = "incident_notifications"
    __table_args__ = (
        Index(
            "ix_incident_notifications_pending",
            "next_attempt_at",
            "id",
            sqlite_where=text("delivered_at IS NULL AND failed_at IS NULL"),
            postgresql_where=text("delivered_at IS NULL AND failed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("notification_webhooks.id", ondelete="CASCADE")
    )
    event: Mapped[str] = mapped_column(String(40))
    incident_id: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
