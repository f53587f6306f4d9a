"""message_decisions: the decision trace of each message

Issue 22, item 2: every decision on a message (sent, deferred and until when, held,
suppressed, re-timed by an edit, released by a resume, failed in the queue) is one compact
row: the message and its invite, when, what, the rule and reason (slugs), the time it was
deferred to, the policy version in force and the worker. The invite lookup reads them by
(invite_id, at); the maintenance job prunes them after DISPATCH_DECISION_RETENTION_DAYS,
walking the big-int key (insertion order), so no index on `at` alone slows the writes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dispatch_engine.db.types

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_decisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("invite_id", sa.String(length=32), nullable=False),
        sa.Column("at", dispatch_engine.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("until", dispatch_engine.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_decisions")),
    )
    with op.batch_alter_table("message_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_message_decisions_invite_at", ["invite_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_message_decisions_invite_at")
    op.drop_table("message_decisions")
