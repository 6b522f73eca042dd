"""step logs: what an action wrote to ``ctx.log``, kept on its attempt's row

Revision ID: 0009_step_logs
Revises: 0008_test_runs
Create Date: 2026-12-07 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_step_logs"
down_revision: str | Sequence[str] | None = "0008_test_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # null: the attempt logged nothing (and every attempt recorded before this column)
    with op.batch_alter_table("action_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("logs", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("action_executions", schema=None) as batch_op:
        batch_op.drop_column("logs")
