"""rate limits and fair claims: the queue in tenant order, and shared token buckets

Revision ID: 0017_rate_limits_fair_claims
Revises: 0016_api_tokens
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_rate_limits_fair_claims"
down_revision: str | Sequence[str] | None = "0016_api_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIM_ORDER_WHERE = "status IN ('Pending', 'Running')"


def upgrade() -> None:
    # rate limits shared by every API process (PostgreSQL; SQLite keeps them in memory)
    op.create_table(
        "rate_limit_buckets",
        sa.Column("key", sa.String(length=600), nullable=False),
        sa.Column("tat", sa.Double(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("interval_s", sa.Double(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_buckets")),
    )
    # fair claiming: each tenant's queued and leased runs, oldest first
    op.create_index(
        "ix_workflow_executions__claim_order",
        "workflow_executions",
        ["tenant_id", "created_at", "id"],
        unique=False,
        postgresql_include=["status", "lease_expires_at"],
        postgresql_where=sa.text(CLAIM_ORDER_WHERE),
        sqlite_where=sa.text(CLAIM_ORDER_WHERE),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_buckets")
    op.drop_index("ix_workflow_executions__claim_order", table_name="workflow_executions")
