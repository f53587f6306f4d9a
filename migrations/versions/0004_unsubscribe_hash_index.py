"""unsubscribes: index on address_hash (the worker's batch lookup is by hash alone)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_unsubscribes_address_hash", "unsubscribes", ["address_hash"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_unsubscribes_address_hash", table_name="unsubscribes")
