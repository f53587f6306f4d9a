"""policy_versions: an immutable version per change of a policy

Issue 22, item 1: every change of a policy (settings, lineup, status) makes a version
(number = the policy's `version` after the change, time, API key, change name, snapshot
of its settings); `GET …/policies/{id}/versions` lists them.

Policies stored before: their history is not known, so each gets one version, its
current state under its current number, `change` = `migrated`, no key, `created_at` =
its `updated_at`. The snapshot is built from the stored columns and live lineup rows by
the one function the service uses (`schemas.policies.version_snapshot`, pure), so it has
the shape later versions have (DND query values masked). Deleted policies get one too.
Downgrade drops the table (the versions are lost).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import dispatch_engine.db.types
from dispatch_engine.rules.delays import Delay
from dispatch_engine.schemas.policies import StepState, version_snapshot

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    versions = op.create_table(
        "policy_versions",
        sa.Column("policy_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "created_at", dispatch_engine.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("change", sa.String(length=64), nullable=False),
        sa.Column("snapshot", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_policy_versions_policy_id_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("policy_id", "number", name=op.f("pk_policy_versions")),
    )
    assert versions is not None
    _version_existing_policies(versions)


def _version_existing_policies(versions: sa.Table) -> None:
    connection = op.get_bind()
    steps: dict[str, list[StepState]] = {}
    for row in connection.execute(
        sa.text(
            "SELECT id, policy_id, position, channel, delay_days, delay_seconds "
            "FROM lineup_messages WHERE deleted_at IS NULL ORDER BY policy_id, position"
        )
    ).mappings():
        steps.setdefault(row["policy_id"], []).append(
            StepState(
                row["id"],
                row["position"] or 0,
                row["channel"],
                Delay(row["delay_days"] or 0, row["delay_seconds"]),
            )
        )
    policies = sa.table(
        "policies",
        sa.column("id"),
        sa.column("name"),
        sa.column("is_sandbox"),
        sa.column("status"),
        sa.column("uuid_field"),
        sa.column("fatigue", JSON),
        sa.column("business_rules", JSON),
        sa.column("dnd_webhooks", JSON),
        sa.column("version"),
        sa.column("updated_at", dispatch_engine.db.types.UTCDateTime(timezone=True)),
        sa.column("deleted_at", dispatch_engine.db.types.UTCDateTime(timezone=True)),
    )
    rows = [
        {
            "policy_id": policy.id,
            "number": policy.version,
            "created_at": policy.updated_at,
            "key_id": None,
            "change": "migrated",
            "snapshot": version_snapshot(
                name=policy.name,
                sandbox=bool(policy.is_sandbox),
                status=policy.status,
                deleted=policy.deleted_at is not None,
                uuid_field=policy.uuid_field,
                fatigue=policy.fatigue or {},
                business_rules=policy.business_rules or {},
                dnd_webhooks=policy.dnd_webhooks or {},
                lineup=steps.get(policy.id, []),
            ),
        }
        for policy in connection.execute(sa.select(policies))
    ]
    if rows:
        op.bulk_insert(versions, rows)


def downgrade() -> None:
    op.drop_table("policy_versions")
