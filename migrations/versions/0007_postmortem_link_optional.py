"""incident_postmortems.link is optional (the spec's post-mortem has no link)

R-INC-2: "The post-mortem records findings, improvement actions, the total time to
resolution and any service credits due." A link to a longer write-up stays possible.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("incident_postmortems", schema=None) as batch_op:
        batch_op.alter_column("link", existing_type=sa.String(length=2048), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE incident_postmortems SET link = '' WHERE link IS NULL")
    with op.batch_alter_table("incident_postmortems", schema=None) as batch_op:
        batch_op.alter_column("link", existing_type=sa.String(length=2048), nullable=False)
