"""Tables for connectors: the encrypted credential store and resource links.

``credentials`` holds one row per tenant + name; ``ciphertext`` is AES-256-GCM output bound
to that tenant and name (see :mod:`dataworkflows.secrets.credentials`), never the secret itself.

``workflow_resource_links`` (the seeds' WorkflowResourceLinks) records the external objects
steps created, one row per workflow + system + type + external id, so that a re-run can
find what an earlier run created instead of creating it again.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from dataworkflows.db.models import Base
from dataworkflows.db.types import JSONType


class StoredCredential(Base):
    """One encrypted credential of one tenant."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    #: host names the secret may be sent to; an empty list means any host
    allowed_hosts: Mapped[list[str]] = mapped_column(JSONType)
    #: ``v1.<key id>.<base64url(nonce + ciphertext + tag)>``
    ciphertext: Mapped[str] = mapped_column(Text)
    #: id of the key that encrypted it (first 8 bytes of its SHA-256, in hex)
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(200))
    updated_by: Mapped[str | None] = mapped_column(String(200))


class WorkflowResourceLink(Base):
    """An external object a step of a workflow's run created or touched."""

    __tablename__ = "workflow_resource_links"
    __table_args__ = (
        UniqueConstraint("workflow_id", "system", "type", "external_id"),
        Index(None, "workflow_id", "system", "type", "key"),
        Index(None, "execution_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("workflows.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(String(200))
    #: the run that recorded the link first (kept when runs are deleted: the object exists)
    execution_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("workflow_executions.id", ondelete="SET NULL")
    )
    node_id: Mapped[str] = mapped_column(String(200))
    system: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(500))
    url: Mapped[str | None] = mapped_column(Text)
    key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


credentials = StoredCredential.__table__
workflow_resource_links = WorkflowResourceLink.__table__
