"""PostgreSQL: vacuum and analyze the queue-like tables sooner than the default

`messages` is updated (claimed, decided) and `outbox` deleted from at the rate messages go
out. With the defaults, autovacuum waits for 20 % of a table to be dead: at 10 million
messages that is 2 million dead entries at the front of the claim index, which every claim
round walks over, and statistics old enough for the planner to stop walking that index at
all. These tables get vacuumed at 2 % (`outbox`: 1 %) and analyzed at 2 %. SQLite: nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table → its storage parameters (kept literal: a migration must not change with the code)
SETTINGS = {
    "messages": {
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_analyze_scale_factor": "0.02",
    },
    "outbox": {"autovacuum_vacuum_scale_factor": "0.01", "autovacuum_analyze_scale_factor": "0.02"},
    "invites": {"autovacuum_analyze_scale_factor": "0.02"},
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, values in SETTINGS.items():
        assignments = ", ".join(f"{name} = {value}" for name, value in values.items())
        op.execute(f"ALTER TABLE {table} SET ({assignments})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, values in SETTINGS.items():
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(values)})")
