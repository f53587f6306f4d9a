"""incident_communications.recipient sealed; audit rows keep a keyed hash of it

The recipient of an incident communication (an address, a phone number, a name) was
stored and audited in clear. The column becomes Text (a FieldCipher token is longer than
the 320 characters it had) and every existing recipient is sealed, bound to its row id as
incidents/communications.py seals new ones. In the audit log, `incident.communication`
rows lose `after.recipient` and get `after.recipient_hash` instead.

Sealing needs the key rings: they are read from the settings (the environment, as every
command reads them; in dev the generated key file of the data dir), only when there are
rows to change. Run `migrate` with the service's environment.

Downgrade opens the recipients again (same key rings) and narrows the column; the audit
rows keep their hashes (an address cannot be recovered from one).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_ACTION = "incident.communication"

communications = sa.table(
    "incident_communications", sa.column("id", sa.String()), sa.column("recipient", sa.Text())
)
audit_log = sa.table(
    "audit_log",
    sa.column("id", sa.String()),
    sa.column("action", sa.String()),
    sa.column("after", sa.JSON().with_variant(JSONB(), "postgresql")),
)


def _key_rings() -> Any:
    """(cipher, hasher) from the settings, as the service builds them (context.py)."""
    from dispatch_engine.context import key_ring_specs
    from dispatch_engine.security.crypto import FieldCipher, parse_key_ring
    from dispatch_engine.security.hashing import KeyedHasher
    from dispatch_engine.settings import Settings

    encryption, mac = key_ring_specs(Settings())
    return FieldCipher(*parse_key_ring(encryption)), KeyedHasher(*parse_key_ring(mac))


def upgrade() -> None:
    with op.batch_alter_table("incident_communications", schema=None) as batch_op:
        batch_op.alter_column(
            "recipient",
            existing_type=sa.String(length=320),
            type_=sa.Text(),
            existing_nullable=False,
        )
    bind = op.get_bind()
    rows = bind.execute(sa.select(communications.c.id, communications.c.recipient)).all()
    audits = bind.execute(
        sa.select(audit_log.c.id, audit_log.c.after).where(audit_log.c.action == AUDIT_ACTION)
    ).all()
    audits = [(id_, after) for id_, after in audits if after and "recipient" in after]
    if not rows and not audits:
        return
    from dispatch_engine.incidents.communications import recipient_hash, seal_recipient

    cipher, hasher = _key_rings()
    for row_id, recipient in rows:
        bind.execute(
            communications.update()
            .where(communications.c.id == row_id)
            .values(recipient=seal_recipient(cipher, row_id, recipient))
        )
    for audit_id, after in audits:
        kept = {key: value for key, value in after.items() if key != "recipient"}
        kept["recipient_hash"] = recipient_hash(hasher, str(after["recipient"]))
        bind.execute(audit_log.update().where(audit_log.c.id == audit_id).values(after=kept))


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(communications.c.id, communications.c.recipient)).all()
    if rows:
        from dispatch_engine.incidents.communications import open_recipient

        cipher, _hasher = _key_rings()
        for row_id, sealed in rows:
            bind.execute(
                communications.update()
                .where(communications.c.id == row_id)
                .values(recipient=open_recipient(cipher, row_id, sealed))
            )
    with op.batch_alter_table("incident_communications", schema=None) as batch_op:
        batch_op.alter_column(
            "recipient",
            existing_type=sa.Text(),
            type_=sa.String(length=320),
            existing_nullable=False,
        )
