"""queue_integrations.push_error / push_error_at: the queue's last refusal, on the integration

Issue 6: "auth errors surfaced on the integration". The relay records the error of a push
the queue refused as a whole (credentials, rights, missing queue, outage) and clears it
when a push goes through again, so `GET …/queue-integration` shows what is wrong.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dispatch_engine.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queue_integrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("push_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "push_error_at", dispatch_engine.db.types.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("queue_integrations", schema=None) as batch_op:
        batch_op.drop_column("push_error_at")
        batch_op.drop_column("push_error")
