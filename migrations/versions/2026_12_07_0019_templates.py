"""templates: document template sets (versioned) and workflow templates

Revision ID: 0019_templates
Revises: 0018_subworkflows
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019_templates"
down_revision: str | Sequence[str] | None = "0018_subworkflows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "document_template_sets",
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_document_template_sets")),
    )
    op.create_table(
        "document_template_versions",
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("set_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("templates", JSON, nullable=False),
        sa.Column("sample_data", JSON, nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "set_id"],
            ["document_template_sets.tenant_id", "document_template_sets.id"],
            name=op.f("fk_document_template_versions__tenant_id__document_template_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "set_id", "version", name=op.f("pk_document_template_versions")
        ),
    )
    op.create_table(
        "workflow_templates",
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("config_schema", JSON, nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_workflow_templates")),
    )


def downgrade() -> None:
    op.drop_table("workflow_templates")
    op.drop_table("document_template_versions")
    op.drop_table("document_template_sets")
