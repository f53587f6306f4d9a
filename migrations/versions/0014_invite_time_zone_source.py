"""invites.time_zone_source: where the contact's own time zone came from

Issue 22, item 5: with `use_contact_time_zone`, a message's window is read in the
contact file's `time_zone`, else in the one zone of the mobile number's country, else in
the policy's zone. Ingest resolves the contact's side once and stores it on the invite
(`time_zone`) with its source (`contact` or `phone_country`), so the invite lookup can
say which was used and deciding a message parses no phone number.

Invites stored before: a `time_zone` could only come from the contact file, so those get
`contact`; the others keep NULL (the policy's zone applies). Their mobile numbers are not
looked at: they are encrypted, and decrypting every stored contact in a migration is not
worth a better guess for invites already under way.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone_source", sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE invites SET time_zone_source = 'contact' "
        "WHERE time_zone IS NOT NULL AND time_zone_source IS NULL"
    )


def downgrade() -> None:
    # Before this revision a stored zone was always the contact file's.
    op.execute("UPDATE invites SET time_zone = NULL WHERE time_zone_source = 'phone_country'")
    with op.batch_alter_table("invites", schema=None) as batch_op:
        batch_op.drop_column("time_zone_source")
