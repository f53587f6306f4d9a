"""lineup_messages: calendar days of a delay apart from its exact time (issue 22, item 3)

A delay was stored as exact seconds, so `P1D` and `PT24H` were the same 86,400 seconds. Now
`delay_days` holds the calendar days (weeks as 7 days), which keep the local wall-clock time
across DST changes, and `delay_seconds` only the exact hours, minutes and seconds after them.

Existing rows: the whole days of every stored delay become calendar days and the rest stays
exact (86,400 → 1 day + 0 s; 93,600 → 1 day + 7,200 s). That is how the API showed them all
along (`P1D`, `P1DT2H`: whole days were always written as days), so every delay reads back
as the same text; a delay that was meant as `PT24H` was shown as `P1D` too and cannot be
told apart. Downgrade adds the days back as 86,400 seconds each.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "lineup_messages",
        sa.Column("delay_days", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.execute(
        "UPDATE lineup_messages SET delay_days = delay_seconds / 86400, "
        "delay_seconds = delay_seconds % 86400 WHERE delay_seconds >= 86400"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE lineup_messages SET delay_seconds = delay_seconds + delay_days * 86400 "
        "WHERE delay_days > 0"
    )
    with op.batch_alter_table("lineup_messages") as batch_op:
        batch_op.drop_column("delay_days")
