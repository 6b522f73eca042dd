"""Tables of templates (docs/templates.md): document template sets with their versions,
and workflow templates.

A **document template set** (``document_template_sets``) is a named group of Jinja2
templates of one tenant (``text``, ``markdown`` or ``html``); every change adds a row to
``document_template_versions`` holding the whole set (templates and sample data), so a
render names exactly what it used. A **workflow template** (``workflow_templates``) is a
parameterised workflow definition plus the JSON Schema of its configuration.
Ids are unique per tenant: another tenant's template is as missing as an unknown one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dataworkflows.db.models import Base


class DocumentTemplateSet(Base):
    """A template set: its identity and latest version."""

    __tablename__ = "document_template_sets"

    tenant_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(200))


class DocumentTemplateVersion(Base):
    """One version of a template set: every template of the set, and its sample data."""

    __tablename__ = "document_template_versions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "set_id"],
            ["document_template_sets.tenant_id", "document_template_sets.id"],
            ondelete="CASCADE",
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    set_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``{name: {"format": "text"|"markdown"|"html", "source": "...", "description"?}}``
    templates: Mapped[dict[str, Any]]
    #: the data the preview uses when a request gives none
    sample_data: Mapped[dict[str, Any]]
    checksum: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(200))


class WorkflowTemplate(Base):
    """A parameterised workflow definition and the JSON Schema of its configuration."""

    __tablename__ = "workflow_templates"

    tenant_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    config_schema: Mapped[dict[str, Any]]
    #: a workflow definition whose ``{"$config": "path"}`` values and ``${path}`` string
    #: parts are filled from the configuration when it is instantiated
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(200))


document_template_sets = DocumentTemplateSet.__table__
document_template_versions = DocumentTemplateVersion.__table__
workflow_templates = WorkflowTemplate.__table__
