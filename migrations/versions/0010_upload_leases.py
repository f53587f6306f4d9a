"""contact_batches.lease_until / resumed_from, idempotency_keys.batch_id / request_scope

Issue 18: an Idempotency-Key whose request died mid-upload was in flight for ever. The batch
storing a file now holds a lease its request renews; past it the batch is `interrupted`
and a retry with the same key takes the key over and carries on from the rows stored.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dispatch_engine.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact_batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "lease_until", dispatch_engine.db.types.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("resumed_from", sa.String(length=32), nullable=True))
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("request_scope", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("request_scope")
        batch_op.drop_column("batch_id")
    with op.batch_alter_table("contact_batches", schema=None) as batch_op:
        batch_op.drop_column("resumed_from")
        batch_op.drop_column("lease_until")
