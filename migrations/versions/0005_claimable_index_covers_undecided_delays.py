"""messages: the claim index also covers `delayed` messages that were never decided

The claim query takes `pending` and `deferred` messages and `delayed` ones whose reason is
`not_decided_in_time` (0003). The partial index only covered the first two, so PostgreSQL
could not use it for that query: every claim round scanned and sorted all messages
(433 ms per round at 200,000 messages instead of 0.5 ms).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["priority", "not_before", "due_at", "id"]
OLD = "state IN ('pending', 'deferred')"
NEW = "state IN ('pending', 'deferred') OR (state = 'delayed' AND reason = 'not_decided_in_time')"


def _recreate(predicate: str) -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_claimable")
        batch_op.create_index(
            "ix_messages_claimable",
            COLUMNS,
            unique=False,
            sqlite_where=sa.text(predicate),
            postgresql_where=sa.text(predicate),
        )


def upgrade() -> None:
    _recreate(NEW)


def downgrade() -> None:
    _recreate(OLD)
