"""The ``api_tokens`` table: strict mode's API tokens (docs/auth.md).

A token is shown once, when it is created; only the SHA-256 of it is kept (``token_hash``,
hex), so a copy of the database lets nobody call the API. Each token is bound to one tenant
and one role, may expire, and is revoked by setting ``revoked_at`` (the row is kept: the
audit of who had access stays readable).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from dataworkflows.db.models import Base


class ApiToken(Base):
    """One API token of one tenant."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index(None, "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    #: SHA-256 of the whole token, lower-case hex
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(200))
    #: None: never expires
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
