"""invites: index on (dispatch_id, id), so a dispatch's invites page in id order

`GET /v1/accounts/{account}/invites?dispatch=…` (and its CSV report) reads a dispatch's
invites a page at a time in id order; without this index every page of a large dispatch
sorted all its invites again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_invites_dispatch_id", "invites", ["dispatch_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_invites_dispatch_id", table_name="invites")
