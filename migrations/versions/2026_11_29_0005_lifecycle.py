"""lifecycle: workflow audit log, idempotency keys, tenant-wide execution index

Revision ID: 0005_lifecycle
Revises: 0001
Create Date: 2026-11-29 20:13:37.069856
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_lifecycle"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("lock_token", sa.String(length=64), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", JSON, nullable=True),
        sa.Column("response_headers", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'done')", name=op.f("ck_idempotency_keys__state")),
        sa.PrimaryKeyConstraint("tenant_id", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys__expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "workflow_audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("diff", JSON, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('CREATE', 'VERSION', 'PUBLISH', 'ARCHIVE', 'ROLLBACK', 'UPDATE')",
            name=op.f("ck_workflow_audit_log__action"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_audit_log__workflow_id__workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_audit_log")),
    )
    with op.batch_alter_table("workflow_audit_log", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_audit_log__tenant_id_workflow_id_id"),
            ["tenant_id", "workflow_id", "id"],
            unique=False,
        )

    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_workflow_executions__tenant_id_created_at",
            ["tenant_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_index("ix_workflow_executions__tenant_id_created_at")

    with op.batch_alter_table("workflow_audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_audit_log__tenant_id_workflow_id_id"))

    op.drop_table("workflow_audit_log")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys__expires_at"))

    op.drop_table("idempotency_keys")
