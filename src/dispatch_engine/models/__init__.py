"""All tables; importing this module registers them on Base.metadata (Alembic needs that)."""

from dispatch_engine.models.account import Account, QueueIntegration
from dispatch_engine.models.api_key import ApiKey
from dispatch_engine.models.audit import AuditRecord
from dispatch_engine.models.base import Base, new_id
from dispatch_engine.models.decision import MessageDecision
from dispatch_engine.models.dispatch import Dispatch
from dispatch_engine.models.incident import (
    Incident,
    IncidentAccount,
    IncidentApproval,
    IncidentApprovalSending,
    IncidentClockAlert,
    IncidentCommunication,
    IncidentNotification,
    IncidentPostmortem,
    IncidentResend,
    IncidentStatusUpdate,
    NotificationWebhook,
)
from dispatch_engine.models.invite import (
    ContactBatch,
    FatigueLedger,
    IdempotencyKey,
    Invite,
    Message,
    RejectedRow,
    Unsubscribe,
)
from dispatch_engine.models.outbox import LocalQueueMessage, OutboxEntry
from dispatch_engine.models.pause import OperatorPause
from dispatch_engine.models.policy import LineupMessage, Policy, PolicyVersion

__all__ = [
    "Account",
    "ApiKey",
    "AuditRecord",
    "Base",
    "ContactBatch",
    "Dispatch",
    "FatigueLedger",
    "IdempotencyKey",
    "Incident",
    "IncidentAccount",
    "IncidentApproval",
    "IncidentApprovalSending",
    "IncidentClockAlert",
    "IncidentCommunication",
    "IncidentNotification",
    "IncidentPostmortem",
    "IncidentResend",
    "IncidentStatusUpdate",
    "Invite",
    "LineupMessage",
    "LocalQueueMessage",
    "Message",
    "MessageDecision",
    "NotificationWebhook",
    "OperatorPause",
    "OutboxEntry",
    "Policy",
    "PolicyVersion",
    "QueueIntegration",
    "RejectedRow",
    "Unsubscribe",
    "new_id",
]
