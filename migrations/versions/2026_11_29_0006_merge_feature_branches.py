"""merge the feature branches (triggers, durable queue, connectors, lifecycle)

Revision ID: 0006_merge
Revises: 0002_triggers, 0003_durable_queue, 0004_connectors, 0005_lifecycle
Create Date: 2026-11-29 21:00:00
"""

from collections.abc import Sequence

revision: str = "0006_merge"
down_revision: str | Sequence[str] | None = (
    "0002_triggers",
    "0003_durable_queue",
    "0004_connectors",
    "0005_lifecycle",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
