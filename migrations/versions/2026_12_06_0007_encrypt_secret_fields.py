"""encrypt the secret fields of stored trigger configs and definitions (data only)

Revision ID: 0007_secret_fields
Revises: 0006_merge
Create Date: 2026-12-06 20:00:00

Upgrade: every field a plugin declares secret (``SecretStr`` or ``writeOnly``: a trigger
type's config in ``workflow_triggers.config``, an action's parameters in
``workflow_definitions.definition``) that is still plaintext is replaced by its AES-GCM
envelope ``{"$encrypted": "v1.<key id>.<...>"}``, and the checksum of a changed definition
is recomputed over the sealed form (see ``dataworkflows.secrets.fields`` and
``dataworkflows.service.seal_secrets``). Needs the key only when such a value exists.
The rows' old versions may survive in free pages (SQLite) or dead tuples (PostgreSQL) until
``VACUUM``, and in backups taken before: run ``VACUUM`` afterwards and rotate secrets that
backups hold in plaintext.

Downgrade: writes every such secret back as **plaintext**, because the code before this
revision reads the fields as plain values (a webhook would stop verifying signatures, an
action would receive an envelope). Needs the key that encrypted them. After a downgrade
the secrets are readable in the database again, as they were before this revision;
checksums are kept (an identical definition added later is then not recognised as a
duplicate version, which is harmless).
"""

from collections.abc import Sequence

from alembic import context, op

from dataworkflows.service.seal_secrets import migrate_secret_fields

revision: str = "0007_secret_fields"
down_revision: str | Sequence[str] | None = "0006_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    migrate_secret_fields(op.get_bind(), context.config.attributes, decrypt=False)


def downgrade() -> None:
    migrate_secret_fields(op.get_bind(), context.config.attributes, decrypt=True)
