"""The trigger tables: what starts runs from outside (the seeds' WorkflowTriggers).

A trigger belongs to one workflow and has a type registered by a plugin (``webhook``,
``schedule``, ...). Its ``config`` is validated against that type's schema when it is
written; the kernel keeps everything else: enabled flag, activation condition, counters,
the scheduler's cursor (``next_fire_at``) and lease, and a free-form ``state`` object a
plugin may use through :class:`~dataworkflows.plugin_api.PluginAPI`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dataworkflows.db.models import Base


class WorkflowTrigger(Base):
    """One trigger of one workflow."""

    __tablename__ = "workflow_triggers"
    __table_args__ = (
        Index(None, "workflow_id"),
        # the scheduler's "what is due" query
        Index(None, "enabled", "next_fire_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("workflows.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(String(200), default="default")
    #: the registered trigger type name; may name a plugin that is no longer installed
    type: Mapped[str] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]]
    #: a sandboxed Jinja2 expression over the event (``trigger``); None always activates
    activation_condition: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: free-form per-trigger state owned by the trigger's plugin
    state: Mapped[dict[str, Any]]
    #: time-based types: the first fire time not yet processed (None: never fires again)
    next_fire_at: Mapped[datetime | None]
    #: the scheduler instance processing this trigger right now, and until when
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    #: events whose activation condition was false
    not_activated_count: Mapped[int] = mapped_column(Integer, default=0)
    #: events whose activation condition could not be evaluated (counted as not activated)
    condition_error_count: Mapped[int] = mapped_column(Integer, default=0)
    #: fire times that started no run: misfire policy, overlap policy, inactive workflow
    skipped_count: Mapped[int] = mapped_column(Integer, default=0)
    last_event_at: Mapped[datetime | None]
    last_error: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(200))


workflow_triggers = WorkflowTrigger.__table__
