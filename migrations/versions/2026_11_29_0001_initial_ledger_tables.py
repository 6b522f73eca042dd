"""initial ledger tables

Revision ID: 0001
Revises:
Create Date: 2026-11-29 19:54:39.732883
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('Draft', 'Active', 'Archived')", name=op.f("ck_workflows__status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflows__tenant_id_status"), ["tenant_id", "status"], unique=False
        )

    op.create_table(
        "workflow_definitions",
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_definitions__workflow_id__workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "version", name=op.f("pk_workflow_definitions")),
        sa.UniqueConstraint(
            "workflow_id", "checksum", name=op.f("uq_workflow_definitions__workflow_id_checksum")
        ),
    )
    op.create_table(
        "workflow_executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", JSON, nullable=False),
        sa.Column("error", JSON, nullable=True),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("principal", sa.String(length=200), nullable=True),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled')",
            name=op.f("ck_workflow_executions__status"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id", "workflow_version"],
            ["workflow_definitions.workflow_id", "workflow_definitions.version"],
            name=op.f("fk_workflow_executions__workflow_id__workflow_definitions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_executions")),
        sa.UniqueConstraint(
            "workflow_id", "request_id", name=op.f("uq_workflow_executions__workflow_id_request_id")
        ),
    )
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_executions__status_created_at"),
            ["status", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_workflow_executions__workflow_newest", ["workflow_id", "created_at"], unique=False
        )

    op.create_table(
        "action_executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.Column("action_type", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("parameters", JSON, nullable=True),
        sa.Column("outputs", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('Running', 'Succeeded', 'Failed', 'RetriableFailure', 'TimedOut', "
            "'Skipped', 'Cancelled')",
            name=op.f("ck_action_executions__status"),
        ),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_action_executions__attempt_positive")),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["workflow_executions.id"],
            name=op.f("fk_action_executions__execution_id__workflow_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_executions")),
    )
    with op.batch_alter_table("action_executions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_action_executions__execution_id_node_id"),
            ["execution_id", "node_id"],
            unique=False,
        )

    op.create_table(
        "execution_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.String(length=200), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["workflow_executions.id"],
            name=op.f("fk_execution_events__execution_id__workflow_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_events")),
        sa.UniqueConstraint(
            "execution_id", "sequence", name=op.f("uq_execution_events__execution_id_sequence")
        ),
    )


def downgrade() -> None:
    op.drop_table("execution_events")
    with op.batch_alter_table("action_executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_action_executions__execution_id_node_id"))

    op.drop_table("action_executions")
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_index("ix_workflow_executions__workflow_newest")
        batch_op.drop_index(batch_op.f("ix_workflow_executions__status_created_at"))

    op.drop_table("workflow_executions")
    op.drop_table("workflow_definitions")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflows__tenant_id_status"))

    op.drop_table("workflows")
