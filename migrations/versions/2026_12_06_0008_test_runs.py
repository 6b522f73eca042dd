"""test runs: a run of a version that is not published (``dataworkflows run``)

Revision ID: 0008_test_runs
Revises: 0007_secret_fields
Create Date: 2026-12-06 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_test_runs"
down_revision: str | Sequence[str] | None = "0007_secret_fields"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("test_run", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    # test runs become ordinary runs of their (unpublished) versions
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_column("test_run")
