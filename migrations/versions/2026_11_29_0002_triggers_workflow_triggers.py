"""workflow triggers

Revision ID: 0002_triggers
Revises: 0001
Create Date: 2026-11-29 20:03:09.756151
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_triggers"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "workflow_triggers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("activation_condition", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_activated_count", sa.Integer(), nullable=False),
        sa.Column("condition_error_count", sa.Integer(), nullable=False),
        sa.Column("skipped_count", sa.Integer(), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_triggers__workflow_id__workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_triggers")),
    )
    with op.batch_alter_table("workflow_triggers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_triggers__enabled_next_fire_at"),
            ["enabled", "next_fire_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_workflow_triggers__workflow_id"), ["workflow_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("workflow_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_triggers__workflow_id"))
        batch_op.drop_index(batch_op.f("ix_workflow_triggers__enabled_next_fire_at"))

    op.drop_table("workflow_triggers")
