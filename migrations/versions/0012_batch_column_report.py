"""contact_batches.column_report

Issue 20: a contact file says what it understood. The batch keeps what its columns were
read as (known columns, attributes, aliases), shown by the upload's answer and the batch.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-14
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact_batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "column_report",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_batches", schema=None) as batch_op:
        batch_op.drop_column("column_report")
