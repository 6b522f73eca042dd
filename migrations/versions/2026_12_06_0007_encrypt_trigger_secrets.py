"""encrypt the secret fields of stored trigger configs (data only, no schema change)

Revision ID: 0007_trigger_secrets
Revises: 0006_merge
Create Date: 2026-12-06 20:00:00

Upgrade: every field a trigger type declares secret (``SecretStr`` or ``writeOnly``) that
is still plaintext in ``workflow_triggers.config`` is replaced by its AES-GCM envelope
``{"$encrypted": "v1.<key id>.<...>"}`` (see ``dataworkflows.secret_fields`` and
``dataworkflows.db.seal_secrets``). Needs the key only when such a row exists.

Downgrade: writes every such secret back as **plaintext**, because the code before this
revision reads the field as a plain string (a webhook would stop verifying signatures
otherwise). Needs the key that encrypted them; after a downgrade the secrets are readable
in the database again, as they were before this revision.
"""

from collections.abc import Sequence

from alembic import context, op

from dataworkflows.db.seal_secrets import migrate_trigger_secrets

revision: str = "0007_trigger_secrets"
down_revision: str | Sequence[str] | None = "0006_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrate_trigger_secrets(op.get_bind(), context.config.attributes, decrypt=False)


def downgrade() -> None:
    migrate_trigger_secrets(op.get_bind(), context.config.attributes, decrypt=True)
