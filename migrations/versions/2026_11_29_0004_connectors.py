"""connector credentials and resource links

Revision ID: 0004_connectors
Revises: 0001
Create Date: 2026-11-29 20:04:25.290753
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_connectors"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("allowed_hosts", JSON, nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_credentials__tenant_id_name")),
    )
    op.create_table(
        "workflow_resource_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.Column("system", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["workflow_executions.id"],
            name=op.f("fk_workflow_resource_links__execution_id__workflow_executions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_resource_links__workflow_id__workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_resource_links")),
        sa.UniqueConstraint(
            "workflow_id",
            "system",
            "type",
            "external_id",
            name=op.f("uq_workflow_resource_links__workflow_id_system_type_external_id"),
        ),
    )
    with op.batch_alter_table("workflow_resource_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_resource_links__execution_id"), ["execution_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_workflow_resource_links__workflow_id_system_type_key"),
            ["workflow_id", "system", "type", "key"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("workflow_resource_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_resource_links__workflow_id_system_type_key"))
        batch_op.drop_index(batch_op.f("ix_workflow_resource_links__execution_id"))

    op.drop_table("workflow_resource_links")
    op.drop_table("credentials")
